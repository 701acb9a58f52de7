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
import copy
import hashlib
import re
import time
from dataclasses import dataclass
from typing import Any

import torch

from ember.train.measured import measured, positive


def native_bf16(device: torch.device) -> bool:
    """True where bf16 training runs faster than fp32: CUDA with bf16, or a CPU whose bf16 matmul wins.

    On CPU the answer is measured, once for this CPU, torch version and thread count, then kept in
    the process and across processes (`ember.train.measured`): a CPU flag alone does not tell. An Intel CPU
    with AVX512-BF16 but no AMX ran bf16 autocast training at 0.54x the speed of fp32, while an AMD
    Zen CPU with the same flag runs bf16 matmuls 2.2x faster than fp32 and GPT training 1.44–1.48x
    (``benchmarks/gpt_train.py``). So ``auto`` picks bf16 there and fp32 on the first.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
            return False
        speedup = measured("bf16_matmul_speedup", device, lambda: bf16_matmul_speedup(), check=positive)
        return speedup >= BF16_MIN_SPEEDUP
    return False


BF16_MIN_SPEEDUP = 1.3
"""bf16 must run a matmul at least this much faster than fp32 for ``auto`` to choose it on CPU.

Far from both measured cases (0.5x and 2.2x), so a noisy machine does not flip the choice."""


def bf16_matmul_speedup(n: int = 512, repeats: int = 5) -> float:
    """fp32 time / bf16 time of an (n x n) @ (n x n) matmul on this CPU, best of ``repeats`` each.

    About 20 ms at n = 512; the ratio of the best times is robust to a core shared with other work.
    """
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=generator)
    b = torch.randn(n, n, generator=generator)
    a16, b16 = a.bfloat16(), b.bfloat16()

    def best(x: torch.Tensor, y: torch.Tensor) -> float:
        torch.mm(x, y)  # warm-up: oneDNN builds its kernel on the first call
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(x, y)
            times.append(time.perf_counter() - start)
        return min(times)

    return best(a, b) / max(best(a16, b16), 1e-9)


BF16_STEP_MIN_SPEEDUP = 1.1
"""On a model's own training step, bf16 must win by at least this much for ``auto`` to keep it.

A matmul that runs 2.2x faster in bf16 does not promise that every model does: attention,
normalization, element-wise work and the casts around them gain less, and small convolutions may
not gain at all. On the AMD EPYC of ``benchmarks/resnet_epoch.py`` the Fashion-MNIST ResNet's step
measured 1.61x and the char GPT's 1.59x, so both keep bf16 there. Below 10% a gain does not pay for
bf16's coarser rounding."""


def bf16_step_speedup(model: torch.nn.Module, batch: Any, task: Any, repeats: int = 3) -> float:
    """fp32 time / bf16-autocast time of one forward and backward of ``model`` on ``batch``.

    Runs a copy of the model (its weights, BatchNorm statistics and gradients are not touched) with
    the random-number state restored afterwards, so the training that follows is the one it would
    have been without the measurement. One warm-up step each (oneDNN builds its kernels), then
    ``repeats`` steps of each taking turns; the ratio of the best times.

    Args:
        model: the model as it will train (on its device, in train mode).
        batch: one training batch, on the model's device.
        task: how a batch goes through the model: ``task.forward(model, batch)`` and ``task.loss``.
    """
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    with torch.random.fork_rng(devices=[]):
        twin = copy.deepcopy(model).train()

        def step(dtype: torch.dtype | None) -> float:
            start = time.perf_counter()
            context = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
            with context:
                output, target = task.forward(twin, batch)
                loss = task.loss(output, target)
            loss.backward()
            twin.zero_grad(set_to_none=True)
            return time.perf_counter() - start

        step(None), step(torch.bfloat16)
        fp32, bf16 = [], []
        for _ in range(repeats):
            fp32.append(step(None))
            bf16.append(step(torch.bfloat16))
    return min(fp32) / max(min(bf16), 1e-9)


def step_key(signature: tuple[Any, ...]) -> str:
    """A model-and-batch signature (`ember.train.flops`) as a short text that is the same in every
    process: functions and types by name, not by address."""
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", repr(signature))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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
