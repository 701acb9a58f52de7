"""precision: names resolve to autocast settings; `auto` follows a measured bf16 speed-up on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ember.train import precision
from ember.train.precision import resolve_precision


def test_names_resolve() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu).dtype is None
    assert resolve_precision("bf16", cpu).dtype is torch.bfloat16
    with pytest.raises(ValueError, match="expected one of auto"):
        resolve_precision("fp8", cpu)


def test_bf16_speedup_is_a_positive_ratio() -> None:
    ratio = precision.bf16_matmul_speedup(n=64, repeats=2)
    assert 0.0 < ratio < 100.0


@pytest.mark.parametrize(("speedup", "expected"), [(0.54, "fp32"), (1.29, "fp32"), (2.2, "bf16")])
def test_auto_follows_the_measured_speedup(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, speedup: float, expected: str
) -> None:
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        expected = "fp32"  # no bf16 kernels at all: auto never picks bf16, whatever a timing says
    monkeypatch.setenv("EMBER_MEASURE_CACHE", str(tmp_path / "measured.json"))  # nothing kept yet
    monkeypatch.setattr(precision, "bf16_matmul_speedup", lambda: speedup)
    assert resolve_precision("auto", torch.device("cpu")).name == expected


def test_the_run_records_the_resolved_precision(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ember import Trainer
    from ember.track.runs import RunStore

    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    trainer = Trainer(
        torch.nn.Linear(4, 2), precision="auto", epochs=1, batch_size=16, runs_dir=tmp_path, progress=False
    )
    result = trainer.fit((x, y))
    record = RunStore(tmp_path).get(result.run_id)
    assert record.environment["precision"] in {"fp32", "bf16"}
    assert record.environment["precision"] == trainer.precision.name


def test_the_step_measurement_leaves_model_and_random_state_untouched() -> None:
    from ember.tasks import create

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.Linear(16, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = (torch.randn(32, 8), torch.randint(0, 3, (32,)))
    rng = torch.get_rng_state()  # dropout or a diffusion task's noise would draw from it
    ratio = precision.bf16_step_speedup(model, batch, create("classification"), repeats=1)
    assert 0.0 < ratio < 100.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN stats too
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


def _bf16_matmul_and_a_step_speedup(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, speedup: float
) -> list[float]:
    """A CPU whose matmuls win in bf16, and a model step that measures ``speedup``; the calls made."""
    from ember.train import measured
    from ember.train import trainer as trainer_module

    monkeypatch.setenv("EMBER_MEASURE_CACHE", str(tmp_path / "measured.json"))
    measured.forget()
    calls: list[float] = []

    def fake(*args: object, **kwargs: object) -> float:
        calls.append(speedup)
        return speedup

    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    monkeypatch.setattr(trainer_module, "bf16_step_speedup", fake)
    return calls


@pytest.mark.parametrize(("speedup", "expected"), [(0.71, "fp32"), (1.05, "fp32"), (1.48, "bf16")])
def test_auto_weighs_bf16_on_the_models_own_step(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, speedup: float, expected: str
) -> None:
    from ember import Trainer
    from ember.track.runs import RunStore

    calls = _bf16_matmul_and_a_step_speedup(monkeypatch, tmp_path, speedup)
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    trainer = Trainer(
        torch.nn.Linear(4, 2), precision="auto", epochs=1, batch_size=16, runs_dir=tmp_path, progress=False
    )
    assert trainer.precision.name == "bf16"  # the matmul's answer, before the model is weighed
    result = trainer.fit((x, y))
    record = RunStore(tmp_path).get(result.run_id)
    assert trainer.precision.name == record.environment["precision"] == expected
    assert record.summary["bf16_step_speedup"] == speedup
    again = Trainer(
        torch.nn.Linear(4, 2), precision="auto", epochs=1, batch_size=16, runs_dir=tmp_path, progress=False
    )
    again.fit((x, y))
    assert again.precision.name == expected and len(calls) == 1  # kept for this architecture


def test_a_recipe_run_records_the_weighed_precision_and_resumes_in_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import ember
    from ember.track.runs import RunStore

    _bf16_matmul_and_a_step_speedup(monkeypatch, tmp_path, 0.71)
    config = str(Path(__file__).resolve().parents[2] / "configs" / "digits-cnn.yaml")
    overrides = {"trainer.precision": "auto", "model.name": "cnn_tiny", "trainer.epochs": 2}
    first = ember.fit(config, overrides | {"trainer.max_steps": 3}, runs_dir=tmp_path, progress=False)
    assert RunStore(tmp_path).get(first.run_id).environment["precision"] == "fp32"
    run_json = (first.run_dir / "run.json").read_text()
    assert '\\"precision\\": \\"fp32\\"' in run_json  # the record a rebuild reads agrees
    _bf16_matmul_and_a_step_speedup(monkeypatch, tmp_path, 1.48)  # the machine has changed its mind
    resumed = ember.fit(
        config, overrides | {"trainer.max_steps": 3}, runs_dir=tmp_path, progress=False, resume=first.run_id
    )
    assert resumed.run_id == first.run_id
    assert RunStore(tmp_path).get(first.run_id).environment["precision"] == "fp32"
