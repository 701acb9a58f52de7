"""int8 quantization: dynamic (torch, Linear/LSTM), ONNX Runtime dynamic and static (calibrated CNN)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from ember.deploy import quantize
from ember.deploy.bench import size_bytes
from ember.models import create

pytest.importorskip("onnxruntime")


class TinyLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(8, 32, batch_first=True)
        self.head = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)  # (B, T, 8) -> (B, T, 32)
        return self.head(out[:, -1])


def test_dynamic_int8_quantizes_linear_layers_and_leaves_the_input_alone() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10)).eval()
    x = torch.randn(32, 64)
    q = quantize.dynamic_int8(model)
    assert type(model[0]) is nn.Linear  # a copy was quantized
    assert all("quantized.dynamic" in type(q[i]).__module__ for i in (0, 2))
    with torch.no_grad():
        want, got = model(x), q(x)
    assert (want - got).abs().max() < 0.05 * want.abs().max()
    assert (want.argmax(1) == got.argmax(1)).float().mean() >= 0.9
    assert size_bytes(q) < size_bytes(model) / 2.5  # int8 weights: about a quarter of fp32


def test_dynamic_int8_quantizes_lstm() -> None:
    torch.manual_seed(0)
    model = TinyLSTM().eval()
    x = torch.randn(4, 5, 8)
    q = quantize.dynamic_int8(model)
    assert "quantized.dynamic" in type(q.lstm).__module__
    with torch.no_grad():
        assert (model(x) - q(x)).abs().max() < 0.05


def test_dynamic_int8_explains_when_nothing_can_be_quantized() -> None:
    with pytest.raises(ValueError, match="static_int8"):
        quantize.dynamic_int8(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()))


def test_static_int8_runs_a_calibrated_cnn_in_int8(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    torch.manual_seed(0)
    model = create("cnn_tiny", in_channels=1, image_size=8, width=16).eval()
    calibration = torch.rand(128, 1, 8, 8)
    q = quantize.static_int8(model, list(calibration.split(32)), workdir=tmp_path, threads=1)
    ops = {node.op_type for node in onnx.load(str(q.onnx_path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ: convs run on int8 tensors
    x = torch.rand(64, 1, 8, 8)
    with torch.no_grad():
        want, got = model(x), q(x)
    assert got.shape == want.shape and got.dtype == torch.float32
    assert (want - got).abs().max() < 0.1 * want.abs().max()
    assert len(q.state_dict()) == 0  # a runner, not trainable
    # the fp32 export beside it was checked against eager to 1e-4
    fp32 = quantize.OnnxModule(tmp_path / "model.onnx", threads=1)
    assert (fp32(x) - want).abs().max() <= 1e-4
    assert size_bytes(q) < size_bytes(fp32)


def test_static_int8_needs_calibration_batches() -> None:
    with pytest.raises(ValueError, match="calibration"):
        quantize.static_int8(nn.Linear(2, 2), [])


def test_onnx_int8_quantizes_matmuls(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)).eval()
    q = quantize.onnx_int8(model, torch.rand(4, 1, 8, 8), workdir=tmp_path, threads=1)
    ops = {node.op_type for node in onnx.load(str(q.onnx_path)).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        assert (model(x) - q(x)).abs().max() < 0.05
    assert q.with_threads(2).threads == 2


def test_encoder_attention_is_fused_for_onnx_runtime_and_quantized(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    torch.manual_seed(0)
    model = create("transformer_encoder_tiny", vocab_size=50, num_classes=3, max_len=16, dropout=0.0).eval()
    ids = torch.randint(1, 50, (6, 16), generator=torch.Generator().manual_seed(0))
    ids[1, 5:] = 0  # padding: the key padding mask must survive the fusion
    ids[4, 9:] = 0
    fp32 = quantize.onnx_fp32(model, ids, workdir=tmp_path, threads=1)
    graph = onnx.load(str(fp32.onnx_path)).graph
    fused = [n for n in graph.node if n.op_type == "Attention" and n.domain == "com.microsoft"]
    assert len(fused) == len(model.blocks) and all(n.input[3] for n in fused)  # masked
    assert not any(n.op_type == "Transpose" for n in graph.node)  # the head reshuffles are gone
    with torch.no_grad():
        assert (fp32(ids) - model(ids)).abs().max() <= 1e-4
        assert (fp32(ids[:1]) - model(ids[:1])).abs().max() <= 1e-4
    q = quantize.onnx_int8(model, ids, workdir=tmp_path / "q", threads=1)
    ops = {node.op_type for node in onnx.load(str(q.onnx_path)).graph.node}
    assert "QAttention" in ops  # the QKV projection in int8
    with torch.no_grad():
        assert (q(ids) - model(ids)).abs().max() < 0.05


def test_ort_dynamic_int8_keeps_the_standard_causal_attention_float(tmp_path: Path) -> None:
    """A causal GPT's graph holds opset 23's ``Attention(is_causal=1)``; quantizing it as the contrib
    op of the same name gave a ``QAttention`` that ONNX Runtime refused to load."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from ember.deploy import _onnx

    info = helper.make_tensor_value_info
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
        helper.make_node("Reshape", ["h", "shape"], ["heads"], name="split_heads"),
        helper.make_node("Attention", ["heads", "heads", "heads"], ["y"], name="sdpa", is_causal=1),
    ]
    shape = numpy_helper.from_array(np.array([1, 2, 4, 4], dtype=np.int64), "shape")  # (B, H, T, D)
    graph = helper.make_graph(
        nodes,
        "causal",
        [info("x", TensorProto.FLOAT, [4, 8])],
        [info("y", TensorProto.FLOAT, [1, 2, 4, 4])],
        initializer=[weight, shape],
    )
    src = tmp_path / "causal.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)]), str(src))
    path = _onnx.quantize_dynamic_file(src, tmp_path / "causal.int8.onnx")
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "Attention" in ops and "QAttention" not in ops and "MatMulInteger" in ops  # the MatMul is int8
    x = torch.randn(4, 8)
    got = quantize.OnnxModule(path)(x)  # loads and runs
    assert got.shape == (1, 2, 4, 4) and torch.isfinite(got).all()
