"""Where a training step's time goes: op categories from torch.profiler, and the share of the hardware.

:class:`StepProfiler` is a callback: it runs ``torch.profiler`` over ``steps`` optimizer steps of the
one training loop (after ``skip`` warm-up steps) and sorts every op's *self* time into a category:

============== ==================================================================================
matmul         matrix products and convolutions (``mm``, ``addmm``, ``bmm``, ``linear``, ``conv``)
attention      fused attention kernels (``scaled_dot_product_attention`` and its backends)
norm/act       normalization, activations, softmax, dropout
optimizer      everything inside ``Optimizer.step`` (the update, fused or foreach)
data           fetching the next batch (the loader, marked ``ember::data``)
elementwise    every other tensor op (adds, copies, casts, reductions, the loss)
framework      the rest of the wall time: Python, autograd bookkeeping, dispatch, allocation
============== ==================================================================================

It also reports MFU over the profiled steps when the loop knows the model's FLOPs and the device's
peak (`ember.train.flops`). ``trainer.profile=true`` profiles a run as it trains (``profile.json`` in
the run); ``ember profile RUN`` re-runs a few steps of a finished run's recipe on a copy of it.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from ember.train import Trainer
    >>> profiler = StepProfiler(steps=3, skip=1)
    >>> x, y = torch.randn(64, 16), torch.randint(0, 2, (64,))
    >>> _ = Trainer(nn.Linear(16, 2), epochs=1, batch_size=8, callbacks=[profiler], runs_dir=tempfile.mkdtemp()).fit((x, y))
    >>> sorted(profiler.result.shares) == sorted(CATEGORIES)
    True
"""

from __future__ import annotations

import tempfile  # noqa: F401 - used by the example
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ember.train.state import TrainState

CATEGORIES = ("matmul", "attention", "norm/act", "optimizer", "data", "elementwise", "framework")
DATA_MARK = "ember::data"
_MATMUL = ("mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "conv", "convolution", "mkldnn_convolution")
_ATTENTION = ("scaled_dot_product", "flash_attention", "efficient_attention", "_sdpa", "attention")
_NORM_ACT = ("norm", "gelu", "relu", "silu", "sigmoid", "tanh", "softmax", "dropout", "elu", "hardswish")


@dataclass
class StepProfile:
    """A profile of ``steps`` training steps (see the module docstring)."""

    steps: int
    step_ms: float
    """Mean wall time of one optimizer step."""
    ms: dict[str, float]
    """Category → mean milliseconds per step."""
    shares: dict[str, float]
    """Category → fraction of the step's wall time."""
    mfu: float | None = None
    """Model FLOPs utilization over the profiled steps, when known."""
    top_ops: list[tuple[str, str, float]] = field(default_factory=list)
    """The ops taking the most self time: ``(op, category, ms per step)``."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        """The profile as aligned text lines, the largest category first."""
        lines = [f"{self.steps} steps profiled, {self.step_ms:.2f} ms per step" + (
            f", MFU {100 * self.mfu:.1f}% of the measured peak" if self.mfu is not None else ""
        )]  # fmt: skip
        for name in sorted(self.ms, key=lambda k: -self.ms[k]):
            lines.append(f"  {name:12s} {self.ms[name]:9.3f} ms  {100 * self.shares[name]:5.1f}%")
        if self.top_ops:
            lines.append("  largest ops (self time per step):")
            lines += [f"    {op[:48]:48s} {cat:11s} {ms:8.3f} ms" for op, cat, ms in self.top_ops]
        return "\n".join(lines)


def category(op: str, ancestors: Iterable[str] = ()) -> str:
    """The category of an op named ``op`` called inside ``ancestors`` (outermost first).

    Example:
        >>> category("aten::addmm"), category("aten::add_", ["Optimizer.step#AdamW.step"])
        ('matmul', 'optimizer')
    """
    for parent in ancestors:
        if parent.startswith("Optimizer.step") or parent.startswith("Optimizer.zero_grad"):
            return "optimizer"
        if parent == DATA_MARK:
            return "data"
    if op == DATA_MARK:
        return "data"
    name = op.split("::")[-1].lower()
    if any(k in name for k in _ATTENTION):
        return "attention"
    if name.lstrip("_") in _MATMUL or "conv" in name or name.endswith(("_mm", "mm_")):
        return "matmul"
    if any(k in name for k in _NORM_ACT):
        return "norm/act"
    return "elementwise"


class MarkedLoader:
    """A loader whose batch fetches show up in a profile as ``ember::data``."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:  # set_epoch, device ... of the wrapped loader
        return getattr(self.loader, name)

    def __iter__(self) -> Iterator[Any]:
        it = iter(self.loader)
        while True:
            with torch.profiler.record_function(DATA_MARK):
                try:
                    batch = next(it)
                except StopIteration:
                    return
            yield batch


class StepProfiler:
    """Profile ``steps`` optimizer steps after ``skip`` (a callback; the result in ``.result``)."""

    def __init__(self, steps: int = 10, skip: int = 5) -> None:
        self.steps, self.skip = steps, skip
        self.result: StepProfile | None = None
        self._profiler: Any = None
        self._start_step = 0
        self._started = 0.0
        self._samples = 0

    def on_fit_start(self, state: TrainState) -> None:
        room = state.total_steps - state.step
        self.skip = min(self.skip, max(0, room - self.steps))  # a short run: profile what there is
        if self.skip == 0:
            self._start(state)

    def on_step_end(self, state: TrainState) -> None:
        done = state.step - self._start_step
        if self._profiler is None and self.result is None and done >= self.skip:
            self._start(state)
        elif self._profiler is not None and state.step - self._start_step >= self.steps:
            self._stop(state)

    def on_fit_end(self, state: TrainState) -> None:
        if self._profiler is not None:
            self._stop(state)

    def _start(self, state: TrainState) -> None:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if state.device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self._profiler = torch.profiler.profile(activities=activities)
        self._profiler.__enter__()
        self._start_step, self._samples = state.step, state.samples_seen
        self._started = time.perf_counter()

    def _stop(self, state: TrainState) -> None:
        if state.device.type == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - self._started
        self._profiler.__exit__(None, None, None)
        steps = max(1, state.step - self._start_step)
        samples = state.samples_seen - self._samples
        self.result = summarize(self._profiler.events(), steps, wall)
        if state.flops_per_sample and state.peak_flops and samples > 0:
            self.result.mfu = samples / wall * state.flops_per_sample / state.peak_flops
        self._profiler = None


def summarize(events: Any, steps: int, wall_s: float) -> StepProfile:
    """Sort the self time of every profiled op into :data:`CATEGORIES`, per step."""
    totals = dict.fromkeys(CATEGORIES, 0.0)
    by_op: dict[tuple[str, str], float] = {}
    for e in events:
        if getattr(e, "device_type", None) is not None and "CUDA" in str(e.device_type):
            continue  # kernels are timed on the host side of their launch
        ancestors, parent = [], e.cpu_parent
        while parent is not None:
            ancestors.append(parent.name)
            parent = parent.cpu_parent
        if not e.name.startswith("aten::") and e.name != DATA_MARK:
            continue  # annotations and autograd nodes: their ops are counted themselves
        cat = category(e.name, reversed(ancestors))
        self_ms = e.self_cpu_time_total / 1000.0
        totals[cat] += self_ms
        by_op[(e.name, cat)] = by_op.get((e.name, cat), 0.0) + self_ms
    step_ms = wall_s * 1000.0 / steps
    ms = {k: v / steps for k, v in totals.items()}
    ms["framework"] = max(0.0, step_ms - sum(v for k, v in ms.items() if k != "framework"))
    shares = {k: v / step_ms if step_ms else 0.0 for k, v in ms.items()}
    top = sorted(by_op.items(), key=lambda kv: -kv[1])[:8]
    return StepProfile(steps, step_ms, ms, shares, top_ops=[(op, cat, t / steps) for (op, cat), t in top])


__all__ = ["CATEGORIES", "MarkedLoader", "StepProfile", "StepProfiler", "category", "summarize"]
