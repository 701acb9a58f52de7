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

import logging
import math
import sys
import warnings
from typing import Any

import torch

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
    """Stop when ``metric`` has not improved for ``patience`` validations; end with the best weights.

    When training ends after the best validation (stopped early, or simply later), the weights of
    the best validation are put back into the model, its validation metrics into ``state.metrics``,
    and ``state.stop_reason`` says so: the run's final model is the one that validated best.

    Args:
        metric: a logged validation metric, e.g. ``val/loss`` or ``val/accuracy``.
        patience: validations without improvement before stopping.
        mode: ``min`` or ``max``; default: ``min`` for names containing "loss", else ``max``.
        min_delta: the smallest change that counts as an improvement.
        restore_best: put the best validation's weights back at the end (a CPU copy is kept).
            Under FSDP (`ember.train.fsdp`) the state dict holds each rank's shards (DTensors):
            every rank copies its own, 1/W of the model, and loads them back into its shards
            with no collective; the run's final weights are then gathered from them.
    """

    def __init__(
        self,
        metric: str,
        *,
        patience: int = 3,
        mode: str | None = None,
        min_delta: float = 0.0,
        restore_best: bool = True,
    ) -> None:
        self.metric = metric
        self.patience = patience
        self.mode = mode or ("min" if "loss" in metric or metric.endswith(("mse", "mae")) else "max")
        self.min_delta = min_delta
        self.restore_best = restore_best
        self.best: float | None = None
        self.bad = 0
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.best_metrics: dict[str, float] = {}
        self.best_epoch = 0

    def on_validation_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        if self.metric not in metrics:
            raise KeyError(f"early stopping watches '{self.metric}', but validation logged {sorted(metrics)}")
        value = metrics[self.metric]
        sign = 1 if self.mode == "max" else -1
        if self.best is None or sign * (value - self.best) > self.min_delta:
            self.best, self.bad = value, 0
            self.best_epoch, self.best_metrics = state.epoch, dict(metrics)
            if self.restore_best:
                self.best_weights = {
                    k: v.detach().to("cpu", copy=True) for k, v in state.model.state_dict().items()
                }
            return
        self.bad += 1
        if self.bad >= self.patience:
            state.should_stop = True
            state.stop_reason = (
                f"early stopping: {self.metric} did not improve for {self.patience} validations"
            )

    def on_fit_end(self, state: TrainState) -> None:
        if not self.restore_best or self.best_weights is None or not self.bad:
            return  # the last validation was the best: the model already has its weights
        state.model.load_state_dict(self.best_weights)
        state.metrics.update(self.best_metrics)
        restored = f"restored the weights of epoch {self.best_epoch} ({self.metric} {self.best:.4g})"
        state.stop_reason = f"{state.stop_reason}; {restored}" if state.stop_reason else restored


class ProgressBar(Callback):
    """A tqdm bar over optimizer steps showing loss, the headline metric, samples/s and MFU.

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
            total=state.total_steps,
            initial=state.step,
            unit="step",
            disable=disable,
            dynamic_ncols=True,
            desc=self.description(state),
        )

    def on_log(self, state: TrainState, metrics: dict[str, float]) -> None:
        if self.bar.disable:  # off a terminal: not even the formatting
            return
        self.bar.update(state.step - self.bar.n)
        self.postfix["loss"] = f"{metrics['train/loss']:.4f}"
        self.postfix["samples/s"] = f"{metrics['samples_per_s']:.0f}"
        if "mfu" in metrics:
            self.postfix["MFU"] = f"{100 * metrics['mfu']:.1f}%"
        if "privacy/epsilon" in metrics:  # DP-SGD's budget spent so far
            self.postfix["ε"] = f"{metrics['privacy/epsilon']:.2f}"
        self.bar.set_postfix(self.postfix, refresh=False)

    def on_validation_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        if self.bar.disable:
            return
        key = f"val/{self.headline}"
        if key in metrics and not math.isnan(metrics[key]):
            self.postfix[key] = f"{metrics[key]:.4f}"
        self.bar.set_postfix(self.postfix, refresh=False)

    def on_epoch_end(self, state: TrainState) -> None:
        if not self.bar.disable:  # the loop counts an epoch once it is done: "epoch 10/10" at the end
            self.bar.set_description(self.description(state))

    def on_fit_end(self, state: TrainState) -> None:
        self.bar.set_description(self.description(state), refresh=False)
        self.bar.update(state.step - self.bar.n)
        self.bar.close()

    @staticmethod
    def description(state: TrainState) -> str:
        """``epoch 3/10``: the epochs completed so far, of all."""
        return f"epoch {min(state.epoch, state.epochs)}/{state.epochs}"


class OverfittingWarning(UserWarning):
    """Validation loss turned up while training loss kept falling (raised by :class:`OverfitWarning`)."""


@callbacks.register("overfit_warning")
class OverfitWarning(Callback):
    """Warn early when a run starts to overfit: validation loss rising while training loss falls.

    After each validation it compares ``val/loss`` with the mean ``train/loss`` logged since the
    previous validation. The signal is: the validation loss has not improved for ``patience``
    validations, now sits more than ``min_rise`` (relative) above its best, and the training loss
    is lower than it was at that best. It then warns once (an :class:`OverfittingWarning`, or a
    log line on the ``ember.train`` logger with ``warn=False``) and keeps :attr:`finding` up to
    date; ``stop=True`` also ends training. :meth:`update` is the rule alone, without side
    effects (``ember check`` replays a finished run's curves through it).

    Args:
        patience: validations past the best validation loss before the signal can fire.
        min_rise: relative rise of the validation loss over its best that counts (0.05 = 5%).
        stop: end training when the signal fires (like early stopping, with a reason).
        warn: emit a Python warning (else a log line); the finding is recorded either way.

    Attributes:
        finding: ``{"name", "severity", "message", "evidence"}`` once the signal fired, else None.
        history: ``(epoch, step, train_loss, val_loss)`` of every validation seen.

    Example:
        >>> watcher = OverfitWarning(patience=2, warn=False)
        >>> for train, val in [(1.0, 1.0), (0.6, 0.8), (0.4, 0.9), (0.3, 1.0)]:
        ...     _ = watcher.update(train, val)
        >>> watcher.finding["evidence"]["best_epoch"]
        2
    """

    def __init__(
        self, *, patience: int = 3, min_rise: float = 0.05, stop: bool = False, warn: bool = True
    ) -> None:
        if patience < 1:
            raise ValueError(f"patience must be at least 1, got {patience}")
        self.patience = patience
        self.min_rise = min_rise
        self.stop = stop
        self.warn = warn
        self.finding: dict[str, Any] | None = None
        self.history: list[tuple[int, int, float, float]] = []
        self._train_losses: list[float] = []

    def on_log(self, state: TrainState, metrics: dict[str, float]) -> None:
        if "train/loss" in metrics:
            self._train_losses.append(float(metrics["train/loss"]))

    def on_validation_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        if "val/loss" not in metrics or not self._train_losses:
            return
        train = sum(self._train_losses) / len(self._train_losses)
        self._train_losses = []
        fired = self.update(train, float(metrics["val/loss"]), epoch=state.epoch, step=state.step)
        if fired and self.warn:
            warnings.warn(OverfittingWarning(f"overfitting: {fired['message']}"), stacklevel=2)
        elif fired:
            logging.getLogger("ember.train").warning("overfitting: %s", fired["message"])
        if fired and self.stop:
            state.should_stop = True
            state.stop_reason = f"overfitting: {fired['message']}"

    def update(
        self, train_loss: float, val_loss: float, *, epoch: int | None = None, step: int = 0
    ) -> dict[str, Any] | None:
        """Record one validation; returns the finding the first time the signal fires, else None.

        Pure bookkeeping: it neither warns, logs nor stops (``on_validation_end`` does).
        """
        epoch = len(self.history) + 1 if epoch is None else epoch
        self.history.append((epoch, step, train_loss, val_loss))
        finite = [h for h in self.history if math.isfinite(h[3])]
        if not finite:
            return None
        best = min(finite, key=lambda h: h[3])
        since = sum(1 for h in self.history if h[0] > best[0])
        rise = (val_loss - best[3]) / max(abs(best[3]), 1e-12)
        if since < self.patience or rise <= self.min_rise or not train_loss < best[2]:
            return None
        evidence = {
            "best_epoch": best[0],
            "best_val_loss": round(best[3], 6),
            "train_loss_at_best": round(best[2], 6),
            "epoch": epoch,
            "val_loss": round(val_loss, 6),
            "train_loss": round(train_loss, 6),
            "val_rise": round(rise, 4),
            "gap": round(val_loss - train_loss, 6),
            "validations_since_best": since,
        }
        message = (
            f"validation loss rose {rise:.0%} above its best (epoch {best[0]}) over {since} validations "
            f"while training loss fell from {best[2]:.4g} to {train_loss:.4g}"
        )
        first = self.finding is None
        evidence["first_epoch"] = epoch if self.finding is None else self.finding["evidence"]["first_epoch"]
        self.finding = {
            "name": "overfitting.curve",
            "severity": "warning",
            "message": message,
            "evidence": evidence,
        }
        if not first:
            return None
        return self.finding
