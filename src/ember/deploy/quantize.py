"""Reduced precision, each a function model → model (the input model is never changed): int8
quantization and bfloat16.

- :func:`dynamic_int8`: PyTorch dynamic quantization of ``nn.Linear`` / ``nn.LSTM`` / ``nn.GRU``
  (int8 weights, activations quantized per call). A plain ``nn.Module`` comes back. On small
  layers at batch 1 its quantize/dequantize overhead can make it *slower* than fp32: measure
  (``ember plan`` and ``ember compress`` do) before choosing it.
- :func:`onnx_int8`: the model exported to ONNX and dynamically quantized by ONNX Runtime
  (MatMul/Gemm in int8 on u8 x s8 kernels, VNNI where the CPU has it).
- :func:`static_int8`: post-training static int8 for CNNs through **ONNX Runtime** (QDQ, min/max
  calibration on the batches given, per-channel weights). torch 2.13 moved PT2E quantization out to
  torchao, which ember does not depend on; ONNX Runtime's int8 Conv kernels are the fast path here.

- :func:`bf16`: a bfloat16 copy of the model behind float32 doors (:class:`Bf16Module`): floating
  inputs are cast to bf16 on the way in, floating outputs back to float32 on the way out, integer
  inputs (token ids) pass untouched. Weights take half the bytes; matmuls and convolutions run on
  oneDNN's bf16 kernels, fast where the CPU has AMX or AVX512-BF16 (:func:`bf16_fast_path`) and
  emulated elsewhere. bf16 keeps 8 significant bits (about 2-3 decimal digits): ``ember plan``
  checks its outputs against eager before choosing it.

The ONNX variants return an :class:`~ember.deploy._onnx.OnnxModule`: an ``nn.Module`` whose forward
takes and returns torch tensors (CPU, float32), with no parameters (it cannot be trained further).

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    >>> q = dynamic_int8(model)
    >>> q(torch.randn(2, 16)).shape
    torch.Size([2, 4])
    >>> type(model[0]).__name__  # the input model is untouched
    'Linear'
    >>> half = bf16(model)
    >>> half(torch.randn(2, 16)).dtype, half.model[0].weight.dtype
    (torch.float32, torch.bfloat16)
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ember.deploy import _onnx
from ember.deploy._onnx import OnnxModule

DYNAMIC_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.LSTM, nn.GRU)


def dynamic_int8(
    model: nn.Module, *, modules: Iterable[type[nn.Module]] = DYNAMIC_TYPES, dtype: torch.dtype = torch.qint8
) -> nn.Module:
    """PyTorch dynamic int8 quantization of a copy of ``model``.

    Args:
        model: any module; its ``nn.Linear``, ``nn.LSTM`` and ``nn.GRU`` layers are quantized.
        modules: the layer types to quantize.
        dtype: ``torch.qint8`` (int8 weights) or ``torch.float16``.

    Returns:
        A new module in eval mode with quantized layers; ``model`` is unchanged.
    """
    quantizable = tuple(modules)
    found = [m for m in model.modules() if isinstance(m, quantizable)]
    if not found:
        names = ", ".join(t.__name__ for t in quantizable)
        raise ValueError(
            f"dynamic_int8 found no layer to quantize in {type(model).__name__} (looks for {names}); "
            "for convolutional models use static_int8"
        )
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        # torch.ao's deprecation notices (moving to torchao) and quantized-tensor creation warnings
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(copy.deepcopy(model).eval(), set(quantizable), dtype=dtype)


class Bf16Module(nn.Module):
    """``model`` (already in bfloat16) called with float32 in and float32 out.

    Floating inputs are cast to bf16 and floating outputs (tensors, or tuples / lists / dicts of
    them) back to float32, so callers never see bf16; integer inputs (token ids) and outputs pass
    untouched.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: Any) -> Any:
        return _cast(self.model(*(_cast(x, torch.bfloat16) for x in inputs)), torch.float32)


def bf16(model: nn.Module) -> Bf16Module:
    """A bfloat16 copy of ``model`` behind float32 doors (see :class:`Bf16Module`).

    A cast copy rather than ``torch.autocast``: the weights are converted once instead of on every
    call, and held in half the bytes (``benchmarks/bf16_modes.py``: as fast or faster than autocast
    on an MLP, a CNN and a 4-layer GPT; BENCHMARKS.md).

    Args:
        model: any module; its floating parameters and buffers become bf16 in the copy.

    Returns:
        A new :class:`Bf16Module` in eval mode; ``model`` is unchanged.
    """
    return Bf16Module(copy.deepcopy(model).to(torch.bfloat16).eval()).eval()


def bf16_fast_path() -> str | None:
    """The CPU feature that gives bf16 matmuls native speed here: ``"AMX"``, ``"AVX512-BF16"``, or None
    (bf16 then is emulated in fp32 and usually slower than fp32 eager)."""
    # private torch.cpu probes (torch >= 2.3); missing ones count as absent
    if getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)():
        return "AMX"
    if getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)():
        return "AVX512-BF16"
    return None


def _cast(value: Any, dtype: torch.dtype) -> Any:
    """``value`` with its floating tensors (at any depth of tuples, lists and dicts) cast to ``dtype``."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() and value.dtype != dtype else value
    if isinstance(value, tuple | list):
        items = [_cast(v, dtype) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)  # namedtuples too
    if isinstance(value, dict):
        return {k: _cast(v, dtype) for k, v in value.items()}
    return value


def onnx_fp32(
    model: nn.Module, example: torch.Tensor, *, workdir: str | Path | None = None, threads: int = 0
) -> OnnxModule:
    """``model`` exported to ONNX (verified to max abs error 1e-4) and run by ONNX Runtime in fp32."""
    folder = _folder(workdir)
    return _onnx.onnx_module(model, example, folder, threads=threads)


def onnx_int8(
    model: nn.Module, example: torch.Tensor, *, workdir: str | Path | None = None, threads: int = 0
) -> OnnxModule:
    """ONNX Runtime dynamic int8: export ``model``, quantize its MatMul/Gemm weights to int8.

    Args:
        model: a model taking one tensor and returning one tensor.
        example: an input batch (for export).
        workdir: where ``model.onnx`` and ``model.int8.onnx`` go (default: a new temporary folder).
        threads: ONNX Runtime intra-op threads (0: its default).

    Returns:
        An :class:`OnnxModule` running ``model.int8.onnx``.
    """
    folder = _folder(workdir)
    fp32 = folder / "model.onnx"
    _onnx.export(model, example, fp32)
    path = _onnx.quantize_dynamic_file(fp32, folder / "model.int8.onnx")
    return OnnxModule(path, threads=threads)


def static_int8(
    model: nn.Module,
    calibration_batches: Iterable[torch.Tensor],
    *,
    workdir: str | Path | None = None,
    threads: int = 0,
    per_channel: bool = True,
) -> OnnxModule:
    """Post-training static int8 through ONNX Runtime, calibrated on ``calibration_batches``.

    Convolutions, MatMul and Gemm run in int8 with activation ranges fixed by min/max calibration
    (so the batches should look like serving inputs: a few hundred training examples is typical).

    Args:
        model: a model taking one float tensor and returning one tensor (e.g. a CNN).
        calibration_batches: input batches ``(B, ...)`` (tensors, or ``(x, y)`` pairs).
        workdir: where the ONNX files go (default: a new temporary folder).
        threads: ONNX Runtime intra-op threads (0: its default).
        per_channel: one weight scale per output channel (more accurate; same speed).

    Returns:
        An :class:`OnnxModule` running the quantized ``model.static-int8.onnx``.
    """
    batches = [b[0] if isinstance(b, list | tuple) else b for b in calibration_batches]
    if not batches:
        raise ValueError(
            "static_int8 needs at least one calibration batch (a few hundred examples is typical)"
        )
    folder = _folder(workdir)
    fp32 = folder / "model.onnx"
    _onnx.export(model, batches[0], fp32)
    path = _onnx.quantize_static_file(
        fp32, folder / "model.static-int8.onnx", batches, per_channel=per_channel
    )
    return OnnxModule(path, threads=threads)


def _folder(workdir: str | Path | None) -> Path:
    folder = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="ember-quantize-"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


__all__ = [
    "DYNAMIC_TYPES",
    "Bf16Module",
    "bf16",
    "bf16_fast_path",
    "dynamic_int8",
    "onnx_fp32",
    "onnx_int8",
    "static_int8",
]
