"""Placement: the serving plan (measured choice, honest rejections, budgets, JSON) and device maps."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from ember.deploy import bench, placement
from ember.deploy.placement import PlanError, device_map, dispatch, plan
from ember.models import create

KEYS = {"backend", "threads", "max_batch", "max_wait_ms", "p50_ms", "p99_ms", "measurements"}


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10)).eval()


def _fake_measure(ratios: dict[str, dict[int, float]], p99: dict[int, float], slow: float = 1.0):  # type: ignore[no-untyped-def]
    """A stand-in for bench.measure: 'name@t' takes ratios[name][batch] x eager's (1 + 0.1 B) ms, p99 given."""

    def measure(variants, example, *, batch_sizes, baseline, threads, rounds, round_s):  # type: ignore[no-untyped-def]
        rows = []
        for key in variants:
            backend = key.rsplit("@", 1)[0]
            for b in batch_sizes:
                ratio = 1.0 if backend == "eager" else ratios[backend][b]
                ms = ratio * (1 + 0.1 * b) * (slow if threads == 2 else 1.0)  # eager@2 `slow` x eager@1
                rows.append(
                    bench.Latency(
                        key, b, threads, ms, p99[b] * ratio, ms, 100, ratio, (ratio, ratio), [ms] * rounds
                    )
                )
        return rows

    return measure


def test_plan_chooses_a_faster_backend_and_rejects_a_slower_one(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_measure({"int8-dynamic": {1: 0.4, 64: 0.45}}, {1: 2.0, 64: 80.0})
    monkeypatch.setattr(placement.bench, "measure", fake)
    result = plan(_mlp(), torch.randn(8, 64), backends=["int8-dynamic"], threads=(1,), batch_sizes=(1, 64))
    assert (result.backend, result.quantization, result.max_batch) == ("int8-dynamic", "dynamic", 64)
    assert result.p50_ms == pytest.approx(0.45 * 7.4)

    slow_at_one = _fake_measure({"int8-dynamic": {1: 1.3, 64: 0.5}}, {1: 2.0, 64: 80.0})
    monkeypatch.setattr(placement.bench, "measure", slow_at_one)
    result = plan(_mlp(), torch.randn(8, 64), backends=["int8-dynamic"], threads=(1,), batch_sizes=(1, 64))
    assert result.backend == "eager"  # faster at 64 is not enough: it must win at every batch size
    assert "not faster than eager" in result.rejected["int8-dynamic@1"]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="plans skip thread counts above the CPU count")
def test_plan_never_serves_something_slower_than_eager_at_another_thread_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        placement.bench, "measure", _fake_measure({"int8-dynamic": {1: 0.5}}, {1: 1.0}, slow=10)
    )
    result = plan(_mlp(), torch.randn(8, 64), backends=["int8-dynamic"], threads=(1, 2), batch_sizes=(1,))
    assert (result.backend, result.threads) == ("int8-dynamic", 1)
    assert "best thread count" in result.rejected["int8-dynamic@2"]  # 2x faster than eager@2 is not enough


def test_plan_meets_the_latency_budget_or_says_what_it_could_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(placement.bench, "measure", _fake_measure({}, {1: 3.0, 8: 12.0, 64: 90.0}))
    result = plan(
        _mlp(), torch.randn(8, 64), backends=["eager"], threads=(1,), batch_sizes=(1, 8, 64), p99_ms=20
    )
    assert result.max_batch == 8 and result.p99_ms + result.max_wait_ms <= 20
    with pytest.raises(PlanError, match="fastest was eager@1 at batch 1 with p99 3.00 ms"):
        plan(_mlp(), torch.randn(8, 64), backends=["eager"], threads=(1,), batch_sizes=(1, 8), p99_ms=1)


def test_plan_meets_a_memory_budget_with_int8(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        placement.bench, "measure", _fake_measure({"int8-dynamic": {1: 0.9, 64: 0.9}}, {1: 1, 64: 1})
    )
    fp32_mb = bench.size_bytes(_mlp()) / 2**20
    result = plan(
        _mlp(),
        torch.randn(8, 64),
        backends=["int8-dynamic"],
        threads=(1,),
        batch_sizes=(1, 64),
        memory_mb=fp32_mb / 2,
    )
    assert result.backend == "int8-dynamic"
    assert "MB > budget" in result.rejected["eager@1"]


def test_plan_rejects_int8_that_loses_accuracy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(placement.bench, "measure", _fake_measure({"int8-dynamic": {1: 0.5}}, {1: 1}))
    model = _mlp()
    x = torch.randn(64, 64)
    with torch.no_grad():
        logits = model(x)
    top2 = logits.topk(2, dim=1)
    close = (top2.values[:, 0] - top2.values[:, 1]) < 0.02  # int8 noise can flip these
    y = torch.where(close, top2.indices[:, 0], (logits.argmax(1) + 1) % 10)
    # labels that only the near-ties get right: the budget of 0 points is exceeded if any tie flips
    result = plan(
        model,
        x,
        backends=["int8-dynamic"],
        threads=(1,),
        batch_sizes=(1,),
        heldout=(x, y),
        max_accuracy_drop=-1.0,
    )
    assert result.backend == "eager"
    assert "accuracy drops" in result.quality["int8-dynamic"]["reason"]
    assert result.quality["eager"]["accuracy"] == pytest.approx(float(close.float().mean()))


def test_plan_measures_for_real_and_writes_the_serving_keys(tmp_path: Path) -> None:
    result = plan(
        _mlp(),
        torch.randn(32, 64),
        backends=["eager", "int8-dynamic"],
        threads=(1,),
        batch_sizes=(1, 16),
        rounds=3,
        round_s=0.01,
    )
    passed = [b for b in ("eager", "int8-dynamic") if result.quality[b]["ok"]]
    measured = {(m["backend"], m["batch_size"]) for m in result.measurements}
    assert measured == {(b, n) for b in passed for n in (1, 16)}  # only what kept its accuracy is timed
    for m in result.measurements:  # whatever was chosen is faster than eager everywhere, or is eager
        if m["backend"] == result.backend and result.backend != "eager":
            assert m["ratio_to_eager"] <= 0.95
    data = json.loads(result.save(tmp_path / "plan.json").read_text())
    assert set(data) >= KEYS and data["backend"] in placement.BACKENDS
    assert data["measurements"][0]["calls"] >= 3 and data["machine"]["cpus"] >= 1


def test_saved_plan_rebuilds_the_measured_onnx_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("onnxruntime")
    monkeypatch.setattr(
        placement.bench, "measure", _fake_measure({"onnxruntime": {1: 0.5, 8: 0.5}}, {1: 1, 8: 2})
    )
    model, x = _mlp(), torch.randn(32, 64)
    result = plan(
        model, x, backends=["onnxruntime"], threads=(1,), batch_sizes=(1, 8), workdir=tmp_path / "w"
    )
    assert result.backend == "onnxruntime" and result.quality["onnxruntime"]["max_abs_error"] <= 1e-4
    path = result.save(tmp_path / "out" / "plan.json")
    data = json.loads(path.read_text())
    assert (path.parent / data["artifact"]).is_file()
    served = placement.runner(data, model, folder=path.parent)
    with torch.no_grad():
        assert (served(x) - model(x)).abs().max() <= 1e-4
    (path.parent / data["artifact"]).write_bytes(b"tampered")
    with pytest.raises(ValueError, match="sha256"):
        placement.runner(data, model, folder=path.parent)


def test_plan_refuses_unknown_backends() -> None:
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'"):
        plan(_mlp(), torch.randn(4, 64), backends=["tensorrt"])


def test_plan_measures_bf16_and_records_it(tmp_path: Path) -> None:
    model, x = _mlp(), torch.randn(32, 64)
    result = plan(model, x, backends=["bf16"], threads=(1,), batch_sizes=(1, 16), rounds=3, round_s=0.01)
    q = result.quality["bf16"]
    assert q["ok"] and 0 < q["relative_error"] <= 0.02 and q["agreement"] >= 0.995
    assert q["size_mb"] < 0.6 * result.quality["eager"]["size_mb"]  # bf16 weights: half the bytes
    timed = {m["batch_size"] for m in result.measurements if m["backend"] == "bf16"}
    assert timed == {1, 16}  # measured on every CPU, AMX or not: the numbers decide
    assert result.machine["bf16"] in ("AMX", "AVX512-BF16", "emulated")
    assert result.backend == "bf16" or "bf16@1" in result.rejected
    data = json.loads(result.save(tmp_path / "plan.json").read_text())
    assert data["budget"]["rtol"] == 0.02 and data["quality"]["bf16"]["relative_error"] == q["relative_error"]


def test_a_bf16_plan_serves_float32_from_a_bf16_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(placement.bench, "measure", _fake_measure({"bf16": {1: 0.6, 8: 0.5}}, {1: 1, 8: 2}))
    model, x = _mlp(), torch.randn(32, 64)
    result = plan(model, x, backends=["bf16"], threads=(1,), batch_sizes=(1, 8))
    assert (result.backend, result.precision, result.quantization) == ("bf16", "bf16", None)
    served = placement.runner(json.loads(json.dumps(result.to_dict())), model)
    with torch.no_grad():
        got, want = served(x), model(x)
    assert got.dtype == torch.float32 and not torch.equal(got, want)
    assert float((got - want).norm() / want.norm()) <= 0.02
    assert model[0].weight.dtype == torch.float32  # the plan's model is untouched


def test_bf16_keeps_token_ids_integer_and_is_bounded_by_relative_error() -> None:
    torch.manual_seed(0)
    model = create("gpt_tiny", vocab_size=40, block_size=16).eval()
    ids = torch.randint(0, 40, (8, 16))
    result = plan(model, ids, backends=["bf16"], threads=(1,), batch_sizes=(1,), rounds=1, round_s=0.001)
    q = result.quality["bf16"]  # (B, T, V) logits: no classes to count, the relative error decides
    assert q["ok"] and 0 < q["relative_error"] <= 0.02 and "agreement" not in q


class _Cancels(nn.Module):
    """x + 512 - 512: exact in fp32, but bf16 has a spacing of 4 at 512, so small inputs are lost."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + 512.0) - 512.0


class _Float32Constant(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.ones(64, 4), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.scale.float()  # bf16 @ fp32: no kernel


def test_plan_rejects_bf16_out_of_bounds_or_not_running(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(placement.bench, "measure", _fake_measure({"bf16": {1: 0.5}}, {1: 1}))
    x = torch.randn(64, 64)
    result = plan(_Cancels(), x, backends=["bf16"], threads=(1,), batch_sizes=(1,))
    assert result.backend == "eager" and not result.quality["bf16"]["ok"]
    assert result.quality["bf16"]["reason"].startswith("relative error ")  # one line, with the bound
    assert "> 0.02" in result.rejected["bf16"] and "\n" not in result.rejected["bf16"]
    assert {m["backend"] for m in result.measurements} == {"eager"}  # out of bounds: never timed

    # a classifier within the relative error that loses its accuracy: class 1 wins by 1e-3, which
    # bf16 (spacing 1/32 near 4) rounds away, and a tie goes to class 0
    tie = nn.Linear(64, 2)
    with torch.no_grad():
        tie.weight.copy_(torch.full((2, 64), 1 / 64))
        tie.bias.copy_(torch.tensor([4.0, 4.001]))
    y = torch.ones(64, dtype=torch.long)
    result = plan(tie.eval(), x, backends=["bf16"], threads=(1,), batch_sizes=(1,), heldout=(x, y))
    q = result.quality["bf16"]
    assert q["relative_error"] <= 0.02 and q["accuracy_drop"] > 0.5
    assert result.backend == "eager" and result.rejected["bf16"].startswith("accuracy drops")

    result = plan(_Float32Constant(), x, backends=["bf16"], threads=(1,), batch_sizes=(1,))
    assert result.rejected["bf16"].startswith("the model does not run in bfloat16: RuntimeError")


def test_bf16_that_loses_on_a_cpu_without_native_bf16_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(placement.bench, "measure", _fake_measure({"bf16": {1: 1.4}}, {1: 1}))
    monkeypatch.setattr(placement.quantize, "bf16_fast_path", lambda: None)
    result = plan(_mlp(), torch.randn(8, 64), backends=["bf16"], threads=(1,), batch_sizes=(1,))
    assert result.backend == "eager" and result.machine["bf16"] == "emulated"
    assert result.rejected["bf16@1"].endswith(
        "(this CPU has neither AMX nor AVX512-BF16: bf16 runs emulated)"
    )


def _blocks() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Sequential(nn.Linear(32, 32), nn.GELU()) for _ in range(4)], nn.Linear(32, 3))


def test_device_map_splits_blocks_by_memory_and_dispatch_matches() -> None:
    model = _blocks()
    block = sum(p.numel() * 4 for p in model[0].parameters())  # 32*32 + 32 floats
    dmap = device_map(model, ["cpu:0", "cpu:1"], max_memory={"cpu:0": 2 * block, "cpu:1": "1MiB"})
    assert dmap == {"0": "cpu:0", "1": "cpu:0", "2": "cpu:1", "3": "cpu:1", "4": "cpu:1"}
    x = torch.randn(5, 32)
    with torch.no_grad():
        want = model(x)
        got = dispatch(model, dmap)(x)
    assert torch.equal(want, got)


def test_device_map_says_when_the_model_does_not_fit() -> None:
    with pytest.raises(ValueError, match="block '0' needs"):
        device_map(_blocks(), ["cpu:0"], max_memory={"cpu:0": 100})
    with pytest.raises(TypeError, match="nn.Sequential"):
        device_map(nn.Linear(2, 2), ["cpu"], max_memory={})
