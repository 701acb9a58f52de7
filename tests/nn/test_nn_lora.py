"""LoRA: a transform that starts as the identity, trains only adapters, and merges back exactly."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ember import models
from ember.nn import lora


def _gpt() -> nn.Module:
    torch.manual_seed(0)
    return models.create("gpt_classifier_tiny", vocab_size=20, num_classes=3)


def _train(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor, steps: int = 5) -> None:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05, weight_decay=0.1)
    for _ in range(steps):
        F.cross_entropy(model(ids), labels).backward()
        opt.step()
        opt.zero_grad()


def test_initial_output_equals_the_base_model() -> None:
    model = _gpt().eval()
    ids = torch.randint(1, 20, (4, 12))
    with torch.no_grad():
        before = model(ids)
        lora.apply(model, rank=4, alpha=8.0)
        after = model(ids)
    assert torch.equal(after, before)
    # every Linear inside the blocks, none outside (the head is not a target by default)
    assert sorted(lora.lora_layers(model)) == sorted(
        f"blocks.{i}.{layer}" for i in range(2) for layer in ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")
    )
    assert isinstance(model.head, nn.Linear)


def test_only_adapters_train() -> None:
    model = lora.apply(_gpt(), rank=2, targets=["blocks.*.attn.qkv"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"blocks.{i}.attn.qkv.lora_{ab}" for i in range(2) for ab in "ab"}
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    adapters = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    _train(model.train(), torch.randint(1, 20, (8, 10)), torch.randint(0, 3, (8,)))
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], v) for n, v in frozen.items())
    assert all(not torch.equal(params[n], v) for n, v in adapters.items())
    rank_2 = 2 * (32 + 96)  # per qkv layer: A (2, 32) + B (96, 2)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 2 * rank_2


def test_merge_gives_the_same_outputs_as_the_adapted_model() -> None:
    model = lora.apply(_gpt(), rank=4, alpha=16.0, dropout=0.1)
    ids, labels = torch.randint(1, 20, (8, 10)), torch.randint(0, 3, (8,))
    _train(model.train(), ids, labels)
    model.eval()
    layer = model.blocks[0].attn.qkv
    assert layer.lora_b.abs().sum() > 0  # training moved the adapter off its zero start
    with torch.no_grad():
        adapted = model(ids)
        layer.merge_()  # in place and back
        torch.testing.assert_close(model(ids), adapted, atol=1e-5, rtol=1e-5)
        layer.unmerge_()
        torch.testing.assert_close(model(ids), adapted, atol=1e-5, rtol=1e-5)
        plain = lora.merge(model)
        merged = plain(ids)
    torch.testing.assert_close(merged, adapted, atol=1e-5, rtol=1e-5)
    assert not lora.lora_layers(plain)
    assert set(plain.state_dict()) == set(_gpt().state_dict())  # the un-adapted layout, ready to export


def test_adapter_state_dict_holds_only_adapters() -> None:
    model = lora.apply(_gpt(), rank=2, targets=["blocks.0"])
    assert sorted(lora.adapter_state_dict(model)) == sorted(
        f"blocks.0.{layer}.lora_{ab}"
        for layer in ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")
        for ab in "ab"
    )


def test_a_target_matching_no_linear_is_an_error() -> None:
    with pytest.raises(ValueError, match="LoRA target 'block.*' matches no nn.Linear layer; did you mean"):
        lora.apply(_gpt(), targets=["block.*"])
    with pytest.raises(ValueError, match="rank must be at least 1"):
        lora.LoRALinear(nn.Linear(4, 4), rank=0)
