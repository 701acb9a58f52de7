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
