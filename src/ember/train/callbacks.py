"""A small callback protocol, and the callbacks ember itself uses.

A callback is any object with some of these methods (no base class is needed; :class:`Callback`
exists only to document them). The loop calls each event only on callbacks that define it, so an
unused event costs nothing per step.

- ``on_fit_start(state)``
- ``on_step_end(state)``: after every optimizer step (keep it cheap: no host syncs)
- ``on_log(state, metrics)``: every ``log_every`` steps with train/loss, lr, samples_per_s
- ``on_validation_end(state, metrics)``: after each validation pass (metrics prefixed ``val/``)
- ``on_epoch_end(state)``
- ``on_fit_end(state)``

Set ``state.should_stop = True`` (and ``state.stop_reason``) to end training after the current step.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from ember._registry import Registry
from ember.train.state import TrainState

EVENTS = ("on_fit_start", "on_step_end", "on_log", "on_validation_end", "on_epoch_end", "on_fit_end")

callbacks: Registry[Any] = Registry("callback")


class Callback:
    """Documentation of the events; subclassing is optional."""

    def on_fit_start(self, state: TrainState) -> None: ...
    def on_step_end(self, state: TrainState) -> None: ...
    def on_log(self, state: TrainState, metrics: dict[str, float]) -> None: ...
    def on_validation_end(self, state: TrainState, metrics: dict[str, float]) -> None: ...
    def on_epoch_end(self, state: TrainState) -> None: ...
    def on_fit_end(self, state: TrainState) -> None: ...


class CallbackList:
    """Dispatches each event to the callbacks that define it (overridden, for Callback subclasses)."""

    def __init__(self, items: list[Any]) -> None:
        self.items = list(items)
        self.by_event = {
            event: [getattr(cb, event) for cb in self.items if _defines(cb, event)] for event in EVENTS
        }

    def __call__(self, event: str, *args: Any) -> None:
        for method in self.by_event[event]:
            method(*args)

    def has(self, event: str) -> bool:
        return bool(self.by_event[event])


def _defines(cb: Any, event: str) -> bool:
    method = getattr(type(cb), event, None)
    return method is not None and method is not getattr(Callback, event, None)


@callbacks.register("early_stopping")
class EarlyStopping(Callback):
    """Stop when ``metric`` has not improved for ``patience`` validations.

    Args:
        metric: a logged validation metric, e.g. ``val/loss`` or ``val/accuracy``.
        patience: validations without improvement before stopping.
        mode: ``min`` or ``max``; default: ``min`` for names containing "loss", else ``max``.
        min_delta: the smallest change that counts as an improvement.
    """

    def __init__(
        self, metric: str, *, patience: int = 3, mode: str | None = None, min_delta: float = 0.0
    ) -> None:
        self.metric = metric
        self.patience = patience
        self.mode = mode or ("min" if "loss" in metric or metric.endswith(("mse", "mae")) else "max")
        self.min_delta = min_delta
        self.best: float | None = None
        self.bad = 0

    def on_validation_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        if self.metric not in metrics:
            raise KeyError(f"early stopping watches '{self.metric}', but validation logged {sorted(metrics)}")
        value = metrics[self.metric]
        sign = 1 if self.mode == "max" else -1
        if self.best is None or sign * (value - self.best) > self.min_delta:
            self.best, self.bad = value, 0
            return
        self.bad += 1
        if self.bad >= self.patience:
            state.should_stop = True
            state.stop_reason = (
                f"early stopping: {self.metric} did not improve for {self.patience} validations"
            )


class ProgressBar(Callback):
    """A tqdm bar over optimizer steps showing loss, the headline metric and samples/s.

    It stays quiet off a terminal (``enabled=None``) so logs and CI output stay clean.
    """

    def __init__(self, enabled: bool | None = None, headline: str = "") -> None:
        self.enabled = enabled
        self.headline = headline
        self.bar: Any = None
        self.postfix: dict[str, str] = {}

    def on_fit_start(self, state: TrainState) -> None:
        from tqdm.auto import tqdm

        disable = (not sys.stderr.isatty()) if self.enabled is None else not self.enabled
        self.bar = tqdm(
            total=state.total_steps, initial=state.step, unit="step", disable=disable, dynamic_ncols=True
        )

    def on_log(self, state: TrainState, metrics: dict[str, float]) -> None:
        self.bar.update(state.step - self.bar.n)
        self.postfix["loss"] = f"{metrics['train/loss']:.4f}"
        self.postfix["samples/s"] = f"{metrics['samples_per_s']:.0f}"
        self.bar.set_postfix(self.postfix, refresh=False)

    def on_validation_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        key = f"val/{self.headline}"
        if key in metrics and not math.isnan(metrics[key]):
            self.postfix[key] = f"{metrics[key]:.4f}"
        self.bar.set_description(f"epoch {state.epoch + 1}/{state.epochs}", refresh=False)
        self.bar.set_postfix(self.postfix)

    def on_fit_end(self, state: TrainState) -> None:
        self.bar.update(state.step - self.bar.n)
        self.bar.close()
