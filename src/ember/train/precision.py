"""Numeric precision: fp32, bf16 autocast (CPU and CUDA) and fp16 autocast with a GradScaler (CUDA).

Example:
    >>> p = resolve_precision("bf16", torch.device("cpu"))
    >>> with p.autocast():
    ...     y = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    >>> y.dtype
    torch.bfloat16
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


def native_bf16(device: torch.device) -> bool:
    """True where bf16 training runs faster than fp32: CUDA with bf16, or a CPU with AMX tiles.

    AVX512-BF16 alone is not enough: on such a CPU (no AMX) ``benchmarks/gpt_train.py`` measured
    bf16 autocast training at 0.54x the speed of fp32, so ``auto`` keeps fp32 there.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(
            torch.backends.mkldnn.is_available()
            and torch.ops.mkldnn._is_mkldnn_bf16_supported()
            and torch.cpu._is_amx_tile_supported()
        )
    return False


_NO_AUTOCAST: contextlib.nullcontext[None] = contextlib.nullcontext()


@dataclass(frozen=True)
class Precision:
    """A resolved precision: which autocast dtype (None for fp32) and whether a GradScaler is used."""

    name: str
    device: torch.device
    dtype: torch.dtype | None

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        if self.dtype is None:
            return _NO_AUTOCAST  # reusable: fp32 steps create no context object
        return torch.autocast(self.device.type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler | None:
        return torch.amp.GradScaler(self.device.type) if self.dtype == torch.float16 else None


def resolve_precision(name: str, device: torch.device) -> Precision:
    """Map a precision name to autocast settings for ``device``.

    ``auto`` picks bf16 where the hardware has it natively and fp32 elsewhere. ``fp16`` needs CUDA:
    CPU autocast to fp16 is slow and loses range without a scaler, so it is refused with advice.
    """
    if name == "auto":
        name = "bf16" if native_bf16(device) else "fp32"
    if name == "fp32":
        return Precision("fp32", device, None)
    if name == "bf16":
        return Precision("bf16", device, torch.bfloat16)
    if name == "fp16":
        if device.type != "cuda":
            raise ValueError("precision fp16 needs a CUDA device; on CPU use precision=bf16 (or fp32)")
        return Precision("fp16", device, torch.float16)
    raise ValueError(f"unknown precision '{name}'; expected one of auto, fp32, bf16, fp16")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → the first CUDA device when present, else CPU; other names as torch spells them."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{name}' asked for, but CUDA is not available here; use device=auto or cpu")
    return device
