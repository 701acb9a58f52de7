"""MFU inputs (FLOPs per sample, matmul peak), the step profiler, compile and the optimizer's update."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from ember import models, tasks
from ember.train import Trainer
from ember.train.flops import matmul_peak, mfu, train_flops_per_sample
from ember.train.optim import IMPLEMENTATIONS, build_optimizer, fastest_implementation
from ember.train.profile import CATEGORIES, StepProfiler, category


def test_flops_are_counted_without_running_the_model() -> None:
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    seen: list[int] = []
    model[0].register_forward_hook(lambda m, i, o: seen.append(1))
    assert train_flops_per_sample(
        model, (torch.randn(4, 64), torch.zeros(4)), tasks.create("classification")
    ) == (3 * 2 * (64 * 32 + 32 * 10))
    assert seen == []  # counted on a meta copy: no hook fired, no weights touched
    conv = models.create("cnn_tiny", in_channels=1, num_classes=10, image_size=8)
    assert (
        train_flops_per_sample(conv, (torch.rand(2, 1, 8, 8), torch.zeros(2)), tasks.create("classification"))
        > 0
    )


def test_gpt_counts_its_flops_analytically_close_to_the_counter() -> None:
    gpt = models.create("gpt_tiny", vocab_size=65, block_size=32)
    ids = torch.zeros(2, 32, dtype=torch.long)
    analytic = train_flops_per_sample(gpt, (ids, ids), tasks.create("language_model"))
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        gpt(ids)
    # the op counter sees the matmuls but no FLOPs inside CPU attention kernels; 12 L C T per token adds
    # them (QK^T and AV, forward and backward); 6N also counts biases and norms, hence the tolerance
    c = gpt.config  # type: ignore[attr-defined]
    counted = 3 * counter.get_total_flops() / 2 + 12 * c.num_layers * c.embed_dim * 32 * 32
    assert analytic == pytest.approx(counted, rel=0.05)


def test_mfu_is_throughput_times_flops_over_peak() -> None:
    assert mfu(100.0, 2e6, 4e9) == pytest.approx(0.05)
    assert mfu(100.0, None, 4e9) is None
    assert matmul_peak(torch.device("cpu"), torch.float32, n=64, repeats=2) > 0


def test_the_loop_reports_mfu_and_the_profile_covers_the_step(
    toy_data: tuple[torch.Tensor, torch.Tensor],
) -> None:
    x, y = toy_data
    profiler = StepProfiler(steps=3, skip=1)
    model = nn.Sequential(nn.Linear(8, 64), nn.GELU(), nn.Linear(64, 3))
    result = Trainer(model, epochs=1, batch_size=16, log_every=2, callbacks=[profiler]).fit((x, y))
    assert 0 < result.metrics["mfu"] < 1
    p = profiler.result
    assert p is not None and p.steps == 3 and set(p.shares) == set(CATEGORIES)
    assert sum(p.shares.values()) == pytest.approx(1.0)
    assert p.ms["matmul"] > 0 and p.ms["optimizer"] > 0 and p.ms["norm/act"] > 0


def test_ops_fall_in_their_categories() -> None:
    assert category("aten::mm") == category("aten::convolution_backward") == "matmul"
    assert category("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert category("aten::native_layer_norm") == category("aten::gelu") == "norm/act"
    assert category("aten::mul_", ["ProfilerStep", "Optimizer.step#AdamW.step"]) == "optimizer"
    assert category("aten::add") == "elementwise"


def test_trainer_profile_writes_profile_json(toy_data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = toy_data
    result = Trainer(nn.Linear(8, 3), epochs=2, batch_size=8, profile=True).fit((x, y))
    saved = json.loads((result.run_dir / "profile.json").read_text())
    assert result.profile is not None and saved["steps"] == result.profile.steps > 0


def test_every_update_implementation_gives_the_same_step() -> None:
    torch.manual_seed(0)
    base = nn.Linear(16, 4)
    after = {}
    for impl in ("for-loop", "foreach", "fused"):
        model = nn.Linear(16, 4)
        model.load_state_dict(base.state_dict())
        from ember.config import OptimConfig

        opt = build_optimizer(model, OptimConfig(name="adamw", lr=0.1, implementation=impl))  # type: ignore[arg-type]
        assert opt.ember_implementation == impl  # type: ignore[attr-defined]
        model(torch.ones(2, 16)).sum().backward()
        opt.step()
        after[impl] = model.weight.detach().clone()
    torch.testing.assert_close(after["for-loop"], after["foreach"])
    torch.testing.assert_close(after["for-loop"], after["fused"])
    assert fastest_implementation("adamw", torch.device("cpu")) in IMPLEMENTATIONS


@pytest.mark.slow
def test_compile_trains_the_same_weights_layout_and_times_itself(
    toy_data: tuple[torch.Tensor, torch.Tensor],
) -> None:
    x, y = toy_data
    torch.manual_seed(0)
    result = Trainer(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)), epochs=2, batch_size=16,
                     compile=True).fit((x, y))  # fmt: skip
    from safetensors.torch import load_file

    assert set(load_file(result.run_dir / "model.safetensors")) == {
        "0.weight",
        "0.bias",
        "2.weight",
        "2.bias",
    }
    from ember.track import RunStore

    assert RunStore().get(result.run_id).summary["compile_s"] >= 0


class Repeated(nn.Module):
    """A layer whose FLOPs depend on a plain setting, not on its parameters' shapes."""

    def __init__(self, times: int) -> None:
        super().__init__()
        self.times = times
        self.linear = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.times):
            x = self.linear(x)
        return x


def test_a_count_is_kept_for_the_same_architecture_and_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    from ember.train import flops

    monkeypatch.setattr(flops, "_COUNTS", {})
    calls: list[int] = []
    count = flops._forward_flops
    monkeypatch.setattr(flops, "_forward_flops", lambda *a: calls.append(1) or count(*a))
    x = torch.randn(4, 8)
    once = train_flops_per_sample(Repeated(2), x)
    assert train_flops_per_sample(Repeated(2), x) == once == 3 * 2 * (2 * 8 * 8)  # another model, same count
    assert len(calls) == 1
    assert train_flops_per_sample(Repeated(3), x) == 3 * 3 * (2 * 8 * 8)  # a setting changed
    assert train_flops_per_sample(Repeated(2), torch.randn(4, 5, 8)) == 5 * once  # the shapes changed
    assert len(calls) == 3
    odd = Repeated(2)
    odd.helper = object()  # an attribute whose effect cannot be told: counted every time
    train_flops_per_sample(odd, x)
    train_flops_per_sample(odd, x)
    assert len(calls) == 5
