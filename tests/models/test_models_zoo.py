"""The zoo contract, checked over every registered ``*_tiny`` model (timm / check_estimator style)."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ember import models
from ember._registry import accepted_kwargs


def takes_tokens(name: str) -> bool:
    """Text models (their builders take ``vocab_size``) are checked with token ids, not images."""
    return "vocab_size" in (accepted_kwargs(models.registry.get(name)) or set())


def takes_tables(name: str) -> bool:
    """Table models (their builders take ``cardinalities``) are checked with encoded rows."""
    return "cardinalities" in (accepted_kwargs(models.registry.get(name)) or set())


# dense prediction (boxes, masks) has its own contract in test_models_dense.py, generative models
# and the captioner theirs in test_models_generative.py
DENSE = {"centernet_tiny", "unet_tiny"}
GENERATIVE_MODULES = {f"ember.models.{m}" for m in ("autoencoder", "gan", "diffusion_unet", "captioner")}


def generative(name: str) -> bool:
    return models.registry.get(name).__module__ in GENERATIVE_MODULES


TINY = [
    name
    for name in models.list_models()
    if name.endswith("_tiny")
    and not takes_tokens(name)
    and not takes_tables(name)
    and name not in DENSE
    and not generative(name)
]
TABLE_TINY = [name for name in models.list_models() if name.endswith("_tiny") and takes_tables(name)]
TEXT_TINY = [name for name in models.list_models() if name.endswith("_tiny") and takes_tokens(name)]
SHAPES = [(1, 8), (3, 32)]  # (in_channels, image_size): sklearn digits, CIFAR-like


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("in_channels,image_size", SHAPES)
@pytest.mark.parametrize("name", TINY)
def test_tiny_model_contract(name: str, in_channels: int, image_size: int, tmp_path: Path) -> None:
    torch.manual_seed(0)
    options = {"in_channels": in_channels, "num_classes": 10, "image_size": image_size}
    model = models.create(name, **options)
    x = torch.randn(3, in_channels, image_size, image_size)

    # forward and backward: logits of the right shape, a finite gradient on every trainable parameter
    model.train()
    logits = model(x)
    assert logits.shape == (3, 10)
    F.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name}: no gradient for {pname}"
            assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"

    # timm's split: forward == forward_head(forward_features)
    model.eval()
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(model.forward_head(model.forward_features(x)), expected)  # type: ignore[operator]

    # safetensors round trip into a freshly built model
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    torch.manual_seed(1)
    fresh = models.create(name, **options)
    fresh.load_state_dict(load_file(tmp_path / "model.safetensors"))
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), expected)
    assert _count(model) > 0
    assert _count(fresh) == _count(model)


@pytest.mark.parametrize("name", TEXT_TINY)
def test_tiny_text_model_contract(name: str, tmp_path: Path) -> None:
    """Classifiers map (B, T) ids to (B, K); LMs to (B, T, V); seq2seq (src, tgt) to (B, T_tgt, V)."""
    torch.manual_seed(0)
    classifier = "num_classes" in (accepted_kwargs(models.registry.get(name)) or set())
    options = {"vocab_size": 50, **({"num_classes": 3} if classifier else {})}
    model = models.create(name, **options)
    ids = torch.randint(1, 50, (3, 12))
    inputs = (ids, ids[:, :7]) if hasattr(model, "decode_step") else (ids,)

    model.train()
    out = model(*inputs)
    if classifier:
        assert out.shape == (3, 3)
        F.cross_entropy(out, torch.tensor([0, 1, 2])).backward()
    else:
        assert out.shape == (*inputs[-1].shape, 50)
        F.cross_entropy(out.flatten(0, 1), inputs[-1].flatten()).backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name}: no gradient for {pname}"
            assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"

    model.eval()
    with torch.no_grad():
        expected = model(*inputs)
        if classifier:
            torch.testing.assert_close(model.forward_head(model.forward_features(ids)), expected)  # type: ignore[operator]

    save_file(model.state_dict(), tmp_path / "model.safetensors")  # tied weights are one tensor
    torch.manual_seed(1)
    fresh = models.create(name, **options)
    fresh.load_state_dict(load_file(tmp_path / "model.safetensors"))
    with torch.no_grad():
        assert torch.equal(fresh.eval()(*inputs), expected)


def test_every_family_has_a_tiny_variant() -> None:
    families: dict[str, set[str]] = {}
    for name in models.list_models():
        families.setdefault(models.registry.get(name).__module__, set()).add(name)
    assert len(families) >= 5
    for module, names in families.items():
        assert any(n.endswith("_tiny") for n in names), f"{module} registers no *_tiny variant: {names}"


def test_public_contract_resnet_for_mnist() -> None:
    model = models.create("resnet", in_channels=1, num_classes=10)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_variants_pass_user_options_through() -> None:
    model = models.create("resnet_tiny", in_channels=1, num_classes=7, dropout=0.1, depths=[1, 2])
    assert isinstance(model, models.ResNet)
    assert model.config.dropout == 0.1
    assert model.config.depths == (1, 2)  # YAML lists become tuples
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 7)


def test_unknown_model_name_suggests_the_closest() -> None:
    with pytest.raises(KeyError, match="did you mean 'resnet'"):
        models.create("resnt")


def test_unknown_option_is_named() -> None:
    with pytest.raises(TypeError, match="'widht'.*did you mean 'width'"):
        models.create("cnn_tiny", widht=8)


def test_mlp_explains_a_wrong_image_size() -> None:
    model = models.create("mlp_tiny", in_channels=1, image_size=8)
    with pytest.raises(ValueError, match="image_size"):
        model(torch.randn(2, 1, 28, 28))


def test_convattn_resizes_its_position_embedding_for_other_sizes() -> None:
    model = models.create("convattn_tiny", in_channels=1, image_size=8)
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 10)
    assert models.create("convattn_tiny", pos_embed=False)(torch.randn(2, 3, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("name", TABLE_TINY)
def test_tiny_table_model_contract(name: str, tmp_path: Path) -> None:
    """Encoded rows [2 numeric | 1 indicator | 2 codes] → (B, K); training statistics saved as buffers."""
    options = {
        "num_numeric": 2, "num_binary": 1, "cardinalities": [3, 40], "mean": [1.0, 2.0], "std": [2.0, 4.0],
        "edges": [[0.0, 1.0, 2.0], [0.0, 10.0]], "num_classes": 3,
    }  # fmt: skip
    torch.manual_seed(0)
    model = models.create(name, **options)
    x = torch.tensor([[0.5, 3.0, 1.0, 2.0, 39.0], [1.5, 0.0, 0.0, 0.0, 7.0], [9.0, 1.0, 0.0, 1.0, 0.0]])
    model.train()
    F.cross_entropy(model(x), torch.tensor([0, 1, 2])).backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    model.eval()
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(model.forward_head(model.forward_features(x)), expected)  # type: ignore[operator]
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    torch.manual_seed(1)
    fresh = models.create(name, **{**options, "mean": None, "std": None})  # the buffers come from the file
    fresh.load_state_dict(load_file(tmp_path / "model.safetensors"))
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), expected)
