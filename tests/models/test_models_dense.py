"""The dense-prediction zoo (CenterNet, U-Net): shapes, gradients, the timm split, safetensors, decode."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ember import models
from ember.models.detector import decode


def _outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    out = model(x)
    return list(out.values()) if isinstance(out, dict) else [out]


@pytest.mark.parametrize("in_channels,image_size", [(1, 64), (3, 36)])
@pytest.mark.parametrize("name", ["centernet_tiny", "unet_tiny"])
def test_dense_model_contract(name: str, in_channels: int, image_size: int, tmp_path: Path) -> None:
    torch.manual_seed(0)
    options = {"in_channels": in_channels, "num_classes": 4, "image_size": image_size}
    model = models.create(name, **options)
    x = torch.randn(2, in_channels, image_size, image_size)
    model.train()
    outs = _outputs(model, x)
    if name == "unet_tiny":
        assert outs[0].shape == (2, 4, image_size, image_size)
    else:
        side = image_size // 4
        assert [tuple(o.shape) for o in outs] == [(2, 4, side, side), (2, 2, side, side), (2, 2, side, side)]
    sum(o.square().mean() for o in outs).backward()  # type: ignore[union-attr]
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name}: bad gradient for {pname}"

    model.eval()
    with torch.no_grad():
        expected = _outputs(model, x)
        split = model.forward_head(model.forward_features(x))  # type: ignore[operator]
        split = list(split.values()) if isinstance(split, dict) else [split]
        for a, b in zip(split, expected):
            torch.testing.assert_close(a, b)

    save_file(model.state_dict(), tmp_path / "model.safetensors")
    torch.manual_seed(1)
    fresh = models.create(name, **options).eval()
    fresh.load_state_dict(load_file(tmp_path / "model.safetensors"))
    with torch.no_grad():
        for a, b in zip(_outputs(fresh, x), expected):
            assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["centernet_tiny", "unet_tiny"])
def test_channels_last_computes_the_same(name: str) -> None:
    torch.manual_seed(0)
    plain = models.create(name).eval()
    fast = models.create(name, channels_last=True).eval()
    fast.load_state_dict(plain.state_dict())
    assert any(p.is_contiguous(memory_format=torch.channels_last) and p.ndim == 4 for p in fast.parameters())
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        for a, b in zip(_outputs(fast, x), _outputs(plain, x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_unet_handles_sizes_that_do_not_halve_evenly() -> None:
    model = models.create("unet", width=4, depth=3, num_classes=3)
    assert model(torch.randn(1, 1, 20, 27)).shape == (1, 3, 20, 27)


def test_centernet_heatmap_bias_starts_at_the_prior() -> None:
    model = models.create("centernet_tiny")
    bias = model.heatmap[-1].bias  # type: ignore[index]
    torch.testing.assert_close(torch.sigmoid(bias), torch.full_like(bias, 0.1))


def test_decode_reads_peaks_sizes_and_offsets() -> None:
    logit = torch.full((1, 3, 8, 8), -10.0)
    logit[0, 2, 3, 5] = 4.0  # class 2 at cell (y=3, x=5)
    logit[0, 2, 3, 6] = 3.0  # its neighbour: not a local maximum, suppressed
    logit[0, 0, 6, 1] = 1.0  # class 0 at (y=6, x=1)
    size = torch.zeros(1, 2, 8, 8)
    offset = torch.zeros(1, 2, 8, 8)
    size[0, :, 3, 5] = torch.tensor([10.0, 6.0])
    offset[0, :, 3, 5] = torch.tensor([0.5, 0.25])
    size[0, :, 6, 1] = torch.tensor([4.0, 8.0])
    (det,) = decode({"heatmap": logit, "size": size, "offset": offset}, k=2)
    assert det["labels"].tolist() == [2, 0]
    torch.testing.assert_close(det["scores"], torch.sigmoid(torch.tensor([4.0, 1.0])))
    # centre (5.5, 3.25) cells * 4 = (22, 13) px; 10 x 6 box
    torch.testing.assert_close(det["boxes"], torch.tensor([[17.0, 10.0, 27.0, 16.0], [2.0, 20.0, 6.0, 28.0]]))
    (kept,) = decode({"heatmap": logit, "size": size, "offset": offset}, k=5, min_score=0.5)
    assert kept["labels"].tolist() == [2, 0]  # the rest score sigmoid(-10)
    batch = {"heatmap": logit.expand(3, -1, -1, -1), "size": size.expand(3, -1, -1, -1), "offset": offset}
    batch["offset"] = offset.expand(3, -1, -1, -1)
    assert [d["labels"].tolist() for d in decode(batch, k=1)] == [[2], [2], [2]]


def test_dense_models_are_registered_with_tiny_variants() -> None:
    names = set(models.list_models())
    assert {"centernet", "centernet_tiny", "unet", "unet_tiny"} <= names
    with pytest.raises(ValueError, match="3 stage depths"):
        models.create("centernet", depths=[1, 1])
