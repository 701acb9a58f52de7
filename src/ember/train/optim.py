"""Optimizers and learning-rate schedules, by name.

Weight decay is kept off biases and normalization weights (every parameter with fewer than two
dimensions), as in most modern recipes. A schedule is a plain function ``step -> factor`` of the peak
learning rate; the loop writes ``base_lr * factor`` into each parameter group, which keeps per-group
learning rates (fine-tuning) and costs one multiply per group per step. ``optim.lr_groups`` gives
those: parameter-name patterns → learning rate (`lr_param_groups`), decay still kept off biases and
norms within each.

Example:
    >>> from torch import nn
    >>> from ember.config import OptimConfig, ScheduleConfig
    >>> model = nn.Linear(4, 2)
    >>> opt = build_optimizer(model, OptimConfig(name="sgd", lr=0.1))
    >>> factor = build_schedule(ScheduleConfig(name="cosine", warmup=0.1), total_steps=100, steps_per_epoch=10)
    >>> round(factor(4), 2), factor(10), round(factor(100), 6)
    (0.45, 1.0, 0.0)
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ember._patterns import check_patterns, matches
from ember._registry import Registry
from ember.config import OptimConfig, ScheduleConfig
from ember.train.measured import measured

Schedule = Callable[[int], float]
OptimizerBuilder = Callable[[list[dict[str, Any]], OptimConfig], torch.optim.Optimizer]

optimizers: Registry[torch.optim.Optimizer] = Registry("optimizer")
schedules: Registry[Schedule] = Registry("schedule")


def param_groups(
    params: nn.Module | Iterable[nn.Parameter] | Iterable[dict[str, Any]], weight_decay: float
) -> list[dict[str, Any]]:
    """Split parameters into a decayed group (matrices, kernels) and an undecayed one (biases, norms).

    Already-built groups (a list of dicts, e.g. per-group learning rates) are kept as given. With no
    weight decay at all the split changes nothing, so every parameter goes in one group.
    """
    items: list[Any] = (
        [p for p in params.parameters() if p.requires_grad] if isinstance(params, nn.Module) else list(params)
    )
    if items and isinstance(items[0], dict):
        return [dict(g) for g in items]
    if not weight_decay:  # nothing to keep off: one group, one optimizer kernel call per step
        return [{"params": items, "weight_decay": 0.0}] if items else []
    decay = [p for p in items if p.ndim >= 2]
    no_decay = [p for p in items if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def lr_param_groups(
    model: nn.Module, lr_groups: dict[str, float], *, lr: float, weight_decay: float
) -> list[dict[str, Any]]:
    """Groups of ``model``'s trainable parameters by name: each pattern's get its own learning rate.

    A parameter goes to the first pattern of ``lr_groups`` it matches (see `ember._patterns`), the
    rest get ``lr``; within each, decay stays off biases and norms (`param_groups`).

    Raises:
        ValueError: a pattern matches no trainable parameter (a close name is suggested).

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
        >>> groups = lr_param_groups(model, {"1": 0.01}, lr=0.001, weight_decay=0.1)
        >>> [(g["lr"], g["weight_decay"], len(g["params"])) for g in groups]
        [(0.01, 0.1, 1), (0.01, 0.0, 1), (0.001, 0.1, 1), (0.001, 0.0, 1)]
    """
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    check_patterns(
        [name for name, _ in named], list(lr_groups), "optim.lr_groups pattern", among="trainable parameter"
    )
    chosen: dict[str, list[nn.Parameter]] = {pattern: [] for pattern in lr_groups}
    rest: list[nn.Parameter] = []
    for name, p in named:
        pattern = next((pat for pat in lr_groups if matches(name, pat)), None)
        (chosen[pattern] if pattern is not None else rest).append(p)
    groups = []
    for pattern, group_lr in [*lr_groups.items(), ("", lr)]:
        for group in param_groups(chosen[pattern] if pattern else rest, weight_decay):
            groups.append({**group, "lr": float(group_lr)})
    return groups


def build_optimizer(
    params: nn.Module | Iterable[nn.Parameter] | Iterable[dict[str, Any]], cfg: OptimConfig
) -> torch.optim.Optimizer:
    """The optimizer ``cfg.name`` over ``params`` with decay kept off biases and norm weights.

    For a module, ``cfg.lr_groups`` (pattern → learning rate) splits it further (`lr_param_groups`).
    """
    builder = optimizers.get(cfg.name)
    if isinstance(params, nn.Module) and cfg.lr_groups:
        groups = lr_param_groups(params, cfg.lr_groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        groups = param_groups(params, cfg.weight_decay)
    if not groups:
        raise ValueError("the model has no trainable parameters (all have requires_grad=False)")
    device = next((p.device for g in groups for p in g["params"]), torch.device("cpu"))
    chosen = cfg.implementation if cfg.implementation != "auto" else fastest_implementation(cfg.name, device)
    try:
        opt = builder(groups, cfg, **IMPLEMENTATIONS[chosen])
    except (RuntimeError, TypeError, ValueError) as e:
        if cfg.implementation != "auto":
            raise ValueError(
                f"optim.implementation={chosen} does not work for {cfg.name} here: {e}"
            ) from None
        opt = builder(groups, cfg)
        chosen = "default"
    opt.ember_implementation = chosen  # type: ignore[attr-defined]
    for group in opt.param_groups:
        group.setdefault("base_lr", group["lr"])
    return opt


IMPLEMENTATIONS: dict[str, dict[str, bool]] = {
    "for-loop": {"foreach": False},
    "foreach": {"foreach": True},
    "fused": {"fused": True},
}


def fastest_implementation(name: str, device: torch.device, rounds: int = 5) -> str:
    """The quickest of for-loop / foreach / fused updates of optimizer ``name`` on ``device``.

    Measured on a fixed set of tensors shaped like a small transformer's layers (0.46 M parameters
    in 10 tensors; 20–40 ms on one CPU thread), best time of ``rounds`` steps each; an
    implementation the optimizer lacks here is skipped. The tensors are the same whatever the model,
    so the answer depends only on the optimizer, the device, torch and the thread count: it is
    measured once for those and kept, in the process and across processes (`ember.train.measured`).
    """
    return measured(
        "optimizer_implementation",
        device,
        lambda: _time_implementations(name, device, rounds),
        check=lambda value: value in IMPLEMENTATIONS,
        args=(name, rounds),
    )


def _time_implementations(name: str, device: torch.device, rounds: int) -> str:
    g = torch.Generator().manual_seed(0)
    shapes = [(256, 256)] * 3 + [(1024, 256)] + [(256,)] * 6
    best: dict[str, float] = {}
    for impl, kwargs in IMPLEMENTATIONS.items():
        params = [nn.Parameter(torch.randn(s, generator=g).to(device)) for s in shapes]
        for p in params:
            p.grad = torch.randn(p.shape, generator=g).to(device)
        try:
            opt = optimizers.get(name)([{"params": params}], OptimConfig(name=name), **kwargs)
            opt.step()  # warm-up (state allocation, kernel choice)
        except (RuntimeError, TypeError, ValueError):
            continue
        times = []
        for _ in range(rounds):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        best[impl] = min(times)
    return min(best, key=best.__getitem__) if best else "for-loop"


@optimizers.register("sgd")
def _sgd(groups: list[dict[str, Any]], cfg: OptimConfig, **impl: Any) -> torch.optim.Optimizer:
    """Plain stochastic gradient descent at optim.lr."""
    return torch.optim.SGD(groups, lr=cfg.lr, **impl)


@optimizers.register("momentum")
def _momentum(groups: list[dict[str, Any]], cfg: OptimConfig, **impl: Any) -> torch.optim.Optimizer:
    """SGD with heavy-ball momentum (optim.momentum)."""
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, **impl)


@optimizers.register("nesterov")
def _nesterov(groups: list[dict[str, Any]], cfg: OptimConfig, **impl: Any) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (optim.momentum)."""
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True, **impl)


@optimizers.register("adam")
def _adam(groups: list[dict[str, Any]], cfg: OptimConfig, **impl: Any) -> torch.optim.Optimizer:
    """Adam (optim.betas, optim.eps); weight decay as an L2 term."""
    return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, **impl)


@optimizers.register("adamw")
def _adamw(groups: list[dict[str, Any]], cfg: OptimConfig, **impl: Any) -> torch.optim.Optimizer:
    """AdamW: Adam with decoupled weight decay, the usual default for transformers and tables."""
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, **impl)


@optimizers.register("adagrad")
def _adagrad(groups: list[dict[str, Any]], cfg: OptimConfig, **impl: Any) -> torch.optim.Optimizer:
    """Adagrad: per-parameter rates that shrink with the gradients seen."""
    return torch.optim.Adagrad(groups, lr=cfg.lr, eps=cfg.eps, **impl)


@optimizers.register("rmsprop")
def _rmsprop(groups: list[dict[str, Any]], cfg: OptimConfig, **impl: Any) -> torch.optim.Optimizer:
    """RMSprop with optional momentum (optim.momentum)."""
    return torch.optim.RMSprop(groups, lr=cfg.lr, momentum=cfg.momentum, eps=cfg.eps, **impl)


# --------------------------------------------------------------------------- schedules


def build_schedule(cfg: ScheduleConfig, *, total_steps: int, steps_per_epoch: int) -> Schedule:
    """``step -> factor`` for ``cfg``, with linear warmup in front when ``cfg.warmup`` > 0.

    Args:
        cfg: the schedule section; ``warmup`` < 1 is a fraction of ``total_steps``, >= 1 a step count.
        total_steps: optimizer steps in the whole run.
        steps_per_epoch: optimizer steps per epoch (step/multistep count in epochs).
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    warmup = round(cfg.warmup * total_steps) if cfg.warmup < 1 else int(cfg.warmup)
    if cfg.name == "onecycle" and cfg.warmup == 0:
        warmup = round(0.3 * total_steps)  # one-cycle's customary rising phase
    body = schedules.get(cfg.name)(cfg, total_steps, steps_per_epoch, warmup)
    if warmup <= 0:
        return body

    def with_warmup(step: int) -> float:
        return (step + 1) / (warmup + 1) if step < warmup else body(step)

    return with_warmup


def _progress(step: int, warmup: int, total: int) -> float:
    return min(1.0, max(0.0, (step - warmup) / max(1, total - warmup)))


@schedules.register("constant")
def _constant(cfg: ScheduleConfig, total: int, per_epoch: int, warmup: int) -> Schedule:
    """The same learning rate throughout (after the warmup, if any)."""
    return lambda step: 1.0


@schedules.register("cosine")
def _cosine(cfg: ScheduleConfig, total: int, per_epoch: int, warmup: int) -> Schedule:
    """Cosine decay from the peak to schedule.min_lr_ratio of it, after a linear warmup."""
    floor = cfg.min_lr_ratio
    return lambda step: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * _progress(step, warmup, total)))


@schedules.register("linear")
def _linear(cfg: ScheduleConfig, total: int, per_epoch: int, warmup: int) -> Schedule:
    """Linear decay from the peak to schedule.min_lr_ratio of it, after a linear warmup."""
    floor = cfg.min_lr_ratio
    return lambda step: floor + (1 - floor) * (1 - _progress(step, warmup, total))


@schedules.register("step")
def _step(cfg: ScheduleConfig, total: int, per_epoch: int, warmup: int) -> Schedule:
    """Multiply the rate by schedule.gamma every schedule.step_size epochs (default: a third of training)."""
    every = (cfg.step_size or max(1, math.ceil(total / per_epoch / 3))) * per_epoch
    return lambda step: cfg.gamma ** (step // every)


@schedules.register("multistep")
def _multistep(cfg: ScheduleConfig, total: int, per_epoch: int, warmup: int) -> Schedule:
    """Multiply the rate by schedule.gamma at each of schedule.milestones (epochs or fractions)."""
    bounds = sorted(round(m * total) if m < 1 else int(m) * per_epoch for m in cfg.milestones)
    return lambda step: cfg.gamma ** bisect.bisect_right(bounds, step)


@schedules.register("onecycle")
def _onecycle(cfg: ScheduleConfig, total: int, per_epoch: int, warmup: int) -> Schedule:
    """Smith's one cycle: rise over the warmup, then cosine down to nearly zero."""
    # The learning-rate half of Smith's one-cycle: rise (the warmup), then cosine down to ~0.
    floor = cfg.min_lr_ratio or 1e-4
    return lambda step: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * _progress(step, warmup, total)))
