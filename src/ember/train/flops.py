"""Model FLOPs utilization: the model's FLOPs per training sample over the hardware's measured peak.

MFU (PaLM, nanoGPT's ``estimate_mfu``) is the share of the machine's matmul throughput that goes
into the model's own arithmetic: ``samples/s x training FLOPs per sample / peak FLOP/s``. It says
how close a run is to the hardware's limit, whatever the model, in a way samples/s cannot.

- **FLOPs per sample** of a training step: a token model may say itself (``flops_per_token(T)``;
  ember's GPT gives the analytic count ``6 N + 12 L H Q T``, as nanoGPT does); any other model is
  counted once with :class:`torch.utils.flop_counter.FlopCounterMode` on a *meta-device copy* of the
  model (no arithmetic, no random numbers drawn, no hooks fired) on one training batch's inputs (or
  through the task when the model takes more than its inputs): the forward's FLOPs, times 3 for
  forward + backward (a matmul's backward is two). A count is kept in the process under what it
  depends on (every module's class and settings, the parameters' and buffers' shapes, the batch's
  shapes; see :func:`signature`), so the next fit of the same architecture on the same shapes
  does not count again.
- **Peak**: the best FLOP/s of a square matmul in the run's compute dtype on its device
  (:func:`matmul_peak`; 0.1–0.2 s on one CPU thread), measured once for a device, torch version
  and thread count and then kept, in the process and across processes (`ember.train.measured`).
  This is what ``precision: auto`` measures too; a run's MFU is a share of what the same machine
  was seen to give, not of a datasheet.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    >>> train_flops_per_sample(model, torch.randn(4, 64))  # 3 x 2 x (64 x 32 + 32 x 10)
    14208.0
"""

from __future__ import annotations

import copy
import dataclasses
import time
import types
from typing import Any

import torch
from torch import nn

from ember.train.measured import measured, positive


def train_flops_per_sample(model: nn.Module, batch: Any, task: Any = None) -> float | None:
    """FLOPs of one training sample (forward + backward) of ``model`` on batches like ``batch``.

    Args:
        model: the model; not run, not changed (counted on a meta-device copy).
        batch: one training batch as the loader gives it (its size divides the count).
        task: how a batch goes through the model (``task.forward(model, batch)``); None: the batch
            is the model's positional arguments.

    Returns:
        The count, or None when it cannot be had (a model whose forward does not run on the meta
        device, a batch without tensors).
    """
    first = _first_tensor(batch)
    if first is None or not first.ndim:
        return None
    per_token = getattr(model, "flops_per_token", None)
    if callable(per_token) and not first.is_floating_point() and first.ndim == 2:  # (B, T) token ids
        return float(per_token(first.shape[1])) * first.shape[1]
    key = signature(model, batch, task)
    if key is not None and key in _COUNTS:
        return _COUNTS[key]
    try:
        forward = _forward_flops(model, batch, task)
        count = 3.0 * forward / max(1, first.shape[0]) if forward else None
    except Exception:  # an op without a meta kernel, data-dependent control flow: no count, no harm
        count = None
    if key is not None:
        if len(_COUNTS) >= 64:  # many architectures (a sweep): start over rather than grow
            _COUNTS.clear()
        _COUNTS[key] = count
    return count


_COUNTS: dict[tuple[Any, ...], float | None] = {}  # signature -> count, this process's
_MODULE_STATE = frozenset(vars(nn.Module()))  # nn.Module's own bookkeeping: parameters, hooks, ...
_PLAIN = (int, float, str, bool, type(None), torch.dtype, torch.device)


def signature(model: nn.Module, batch: Any, task: Any) -> tuple[Any, ...] | None:
    """What a count depends on, or None when that cannot be told (then nothing is kept).

    The count is the FLOPs of running the modules' ``forward`` code (their classes) on meta tensors,
    which have shapes but no values, so it is fixed by the classes, each module's settings (its
    attributes: ``in_features``, ``stride``, a loop count ...), the parameters' and buffers' shapes
    and the batch's shapes (and the task's class and settings, when the task runs the model). An
    attribute that is not plain data (a number, string, dtype, shape, tuple or list of them, a
    dataclass of them, a function) makes the signature unknown: its effect cannot be told apart.
    A ``forward`` that reads global state is the one thing this does not see.
    """
    modules = []
    for name, module in model.named_modules():
        settings = _settings({k: v for k, v in vars(module).items() if k not in _MODULE_STATE})
        if settings is None:
            return None
        modules.append((name, type(module), module.training, settings))
    tensors = [(n, tuple(t.shape), t.dtype) for n, t in (*model.named_parameters(), *model.named_buffers())]
    shapes = _settings({"batch": batch})
    worker = None if task is None else (type(task), _settings(dict(vars(task))))
    if shapes is None or (worker is not None and worker[1] is None):
        return None
    return (tuple(modules), tuple(tensors), shapes, worker)


def _settings(values: dict[str, Any]) -> tuple[Any, ...] | None:
    """``values`` as a hashable tuple (tensors by shape and dtype), or None if one is not plain data."""
    out = []
    for key, value in values.items():
        if isinstance(value, torch.Tensor):
            value = ("tensor", tuple(value.shape), value.dtype)
        elif isinstance(value, list | tuple):
            inner = _settings({str(i): v for i, v in enumerate(value)})
            if inner is None:
                return None
            value = (type(value), inner)
        elif isinstance(value, dict):
            inner = _settings({repr(k): v for k, v in value.items()})
            if inner is None:
                return None
            value = (dict, inner)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            inner = _settings({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
            if inner is None:
                return None
            value = (type(value), inner)
        elif isinstance(value, type | types.FunctionType | types.BuiltinFunctionType):
            pass  # by identity: the same function is the same code
        elif not isinstance(value, _PLAIN):
            return None
        out.append((key, value))
    return tuple(out)


def _first_tensor(batch: Any) -> torch.Tensor | None:
    if isinstance(batch, torch.Tensor):
        return batch
    items = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, list | tuple) else ()
    for item in items:
        found = _first_tensor(item)
        if found is not None:
            return found
    return None


def _to_meta(batch: Any) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to("meta")
    if isinstance(batch, list | tuple):
        return type(batch)(_to_meta(b) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_meta(v) for k, v in batch.items()}
    return batch


def _forward_flops(model: nn.Module, batch: Any, task: Any) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    # the copy's parameters and buffers are meta tensors from the start: no weights are copied
    memo: dict[int, Any] = {id(t): torch.empty_like(t, device="meta") for t in model.buffers()}
    memo.update(
        {id(p): nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad) for p in model.parameters()}
    )
    ghost = copy.deepcopy(model, memo)
    for module in ghost.modules():  # a copy's hooks would otherwise fire (and see meta tensors)
        module._forward_hooks.clear()
        module._forward_pre_hooks.clear()
        module._backward_hooks.clear()
    meta = _to_meta(batch)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        try:  # the batch's inputs straight into the model: nothing of the task's runs on meta tensors
            inputs = meta[0] if isinstance(meta, tuple | list) and len(meta) == 2 else meta
            ghost(*inputs) if isinstance(inputs, tuple | list) else ghost(inputs)
        except Exception:
            if task is None:
                raise
            # a model called in its task's own way (a translator's source, target and mask); a copy
            # of the task, so counters it keeps are not advanced
            copy.copy(task).forward(ghost, meta)
    return int(counter.get_total_flops())


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 1024, repeats: int = 5) -> float:
    """Best FLOP/s of an (n x n) @ (n x n) matmul in ``dtype`` on ``device``.

    Measured once for this device, torch version and thread count, then kept (`ember.train.measured`):
    a matmul's best speed is the hardware's and the kernel library's, which none of these change.
    """
    return measured(
        "matmul_peak",
        device,
        lambda: _time_matmul(device, dtype, n, repeats),
        check=positive,
        args=(str(dtype), n, repeats),
    )


def _time_matmul(device: torch.device, dtype: torch.dtype, n: int, repeats: int) -> float:
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    torch.mm(a, b)  # warm-up: the library picks its kernel on the first call
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        sync()
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / max(best, 1e-9)


def mfu(samples_per_s: float, flops_per_sample: float | None, peak: float | None) -> float | None:
    """Model FLOPs utilization (a fraction), or None when either count is unknown."""
    if not flops_per_sample or not peak:
        return None
    return samples_per_s * flops_per_sample / peak


__all__ = ["matmul_peak", "mfu", "train_flops_per_sample"]
