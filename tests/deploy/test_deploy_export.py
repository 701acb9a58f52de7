"""Exports: ONNX checked in ONNX Runtime and torch.export checked after loading, both against eager."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from ember import models
from ember.deploy.export import ExportError, export, export_onnx, export_torch


def _trained_stats(name: str) -> nn.Module:
    """A zoo model whose norm layers hold non-trivial running statistics, in train mode."""
    torch.manual_seed(0)
    model = models.create(name, in_channels=1, image_size=8, num_classes=10)
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(16, 1, 8, 8) * 2 + 0.5)
    return model


@pytest.mark.parametrize("name", ["cnn_tiny", "mlp_tiny", "resnet_tiny"])
def test_onnx_matches_eager_within_1e4_with_a_dynamic_batch(name: str, tmp_path: Path) -> None:
    model = _trained_stats(name)
    path = tmp_path / f"{name}.onnx"
    report = export_onnx(model, torch.rand(4, 1, 8, 8), path, metadata={"ember.model": name})
    assert model.training  # the caller's mode is restored
    assert report.max_abs_error <= 1e-4 and report.batch_sizes == (1, 4, 7) and report.dynamic_batch
    assert path.is_file() and report.size == path.stat().st_size and not list(tmp_path.glob(".*"))
    # checked again here, independently: a fresh session, a batch size the exporter never saw
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert isinstance(session.get_inputs()[0].shape[0], str)  # symbolic batch axis
    x = torch.rand(9, 1, 8, 8)
    (got,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        want = model.eval()(x).numpy()
    assert got.shape == (9, 10) and float(np.abs(got - want).max()) <= 1e-4
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props["ember.model"] == name


def test_static_batch_onnx_keeps_the_batch_fixed(tmp_path: Path) -> None:
    report = export_onnx(
        _trained_stats("mlp_tiny"), torch.rand(3, 1, 8, 8), tmp_path / "m.onnx", dynamic_batch=False
    )
    assert report.batch_sizes == (3,) and not report.dynamic_batch
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == 3


def test_torch_export_round_trip(tmp_path: Path) -> None:
    model = _trained_stats("cnn_tiny").eval()
    path = tmp_path / "cnn.pt2"
    report = export(model, torch.rand(1, 1, 8, 8), path, format="torch-export")
    assert report.format == "torch-export" and report.max_abs_error <= 1e-5 and len(report.batch_sizes) == 3
    loaded = torch.export.load(str(path)).module()
    x = torch.rand(6, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=1e-5)


class Drifting(nn.Module):
    """Adds how often it has been called: the traced graph bakes in a constant eager never repeats."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.linear = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.linear(x) + float(self.calls)


@pytest.mark.parametrize("fn", [export_onnx, export_torch])
def test_an_export_that_differs_is_refused_and_not_written(fn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "drift.out"
    with pytest.raises(ExportError, match=r"differs from the eager model by up to \d"):
        fn(Drifting(), torch.rand(3, 4), path)
    assert list(tmp_path.iterdir()) == []


def test_missing_onnxruntime_names_the_install_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"pip install 'ember\[export\]'"):
        export_onnx(nn.Linear(2, 2), torch.rand(2, 2), tmp_path / "m.onnx")
    with pytest.raises(ExportError, match="unknown export format 'tflite'"):
        export(nn.Linear(2, 2), torch.rand(2, 2), tmp_path / "m", format="tflite")
