"""The training loop: :func:`fit`, plus :func:`evaluate` (:func:`evaluate_pass`) and :func:`predict`.

One loop serves every model and task. What varies is passed in: the ``task`` (how a batch becomes a
loss), the ``callbacks`` (what happens around steps), the ``checkpointer``, and in a data-parallel
job the ``parallel`` context (`ember.train.distributed`). The only host syncs are every
``log_every`` steps, at checkpoints and at epoch ends: per-step losses stay on the device until
then, which is what keeps ember's per-step overhead near a hand-written loop's.

Two optional task hooks vary the step itself (see `ember.tasks.base`): ``train_step(model, batch,
optimizer, autocast=...)`` runs a whole optimizer step — forward, backward and ``optimizer.step()``,
possibly several (a GAN's discriminator, then its generator) — and returns the loss to log;
``after_step(model)`` runs after each optimizer step (a moving average of the weights). Everything
else — position, schedule, logging, checkpoints, resume — is the same for them.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any, Protocol

import torch
from torch import nn

from ember.config import TrainerConfig
from ember.data.loader import TensorLoader
from ember.tasks.base import Evaluation, Task
from ember.train.callbacks import CallbackList
from ember.train.distributed import Parallel
from ember.train.signals import raise_if_interrupted, stop_on_signals
from ember.train.state import TrainState

_ALL_REDUCE = contextlib.nullcontext()  # a micro-batch whose gradients are all-reduced (or one process)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or Inf; the message gives the optimizer step."""


class Checkpointer(Protocol):
    """Told at ``checkpoint_every`` steps (reason ``step``), at epoch ends (``epoch``) and when fit
    ends (``final``); it decides what to write."""

    def save(self, state: TrainState, *, reason: str) -> None: ...


def iterate_epoch(loader: Iterable[Any], epoch: int, start_batch: int) -> Iterator[Any]:
    """Batches of ``epoch`` from ``start_batch`` on: loaders with ``set_epoch(epoch, start_batch)``
    (ember's) seek directly; any other iterable is advanced by skipping batches."""
    set_epoch = getattr(loader, "set_epoch", None)
    if set_epoch is not None:
        try:
            set_epoch(epoch, start_batch)
            return iter(loader)
        except TypeError:  # a DistributedSampler-style set_epoch(epoch)
            set_epoch(epoch)
    return islice(iter(loader), start_batch, None)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move tensors of a (nested) batch to ``device``; a no-op for tensors already there."""
    if isinstance(batch, torch.Tensor):
        return batch if batch.device == device else batch.to(device, non_blocking=True)
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def _batch_size(batch: Any) -> int:
    if type(batch) is tuple and type(batch[0]) is torch.Tensor:  # the usual (inputs, target)
        return int(batch[0].shape[0])
    first = (
        batch[0]
        if isinstance(batch, list | tuple)
        else next(iter(batch.values()))
        if isinstance(batch, dict)
        else batch
    )
    while isinstance(first, list | tuple | dict):
        first = first[0] if not isinstance(first, dict) else next(iter(first.values()))
    return int(first.shape[0])


def fit(
    state: TrainState,
    loader: Iterable[Any],
    task: Task,
    callbacks: CallbackList,
    *,
    cfg: TrainerConfig,
    val_loader: Iterable[Any] | None = None,
    checkpointer: Checkpointer | None = None,
    parallel: Parallel | None = None,
) -> TrainState:
    """Train ``state.model`` from ``state``'s position until the epochs or ``max_steps`` are done.

    In a data-parallel job (``parallel``), steps call its DDP wrapper, micro-batches that only
    accumulate skip the all-reduce, each rank's loss is weighted by its share of a global batch that
    splits unevenly, and the logged loss and samples/s are every rank's.

    Raises:
        NonFiniteLossError: the loss became NaN/Inf; no checkpoint is written after that step.
        Interrupted: SIGTERM came; raised after the step it came in, the final checkpoint and
            ``on_fit_end``.
    """
    with stop_on_signals(state):  # SIGTERM stops after the current step, as should_stop does
        _fit(
            state,
            loader,
            task,
            callbacks,
            cfg=cfg,
            val_loader=val_loader,
            checkpointer=checkpointer,
            parallel=parallel,
        )
    raise_if_interrupted(state)
    return state


def _fit(
    state: TrainState,
    loader: Iterable[Any],
    task: Task,
    callbacks: CallbackList,
    *,
    cfg: TrainerConfig,
    val_loader: Iterable[Any] | None,
    checkpointer: Checkpointer | None,
    parallel: Parallel | None,
) -> None:
    model, optimizer, scaler = state.model, state.optimizer, state.scaler
    step_model = model if parallel is None else parallel.train_module(model)  # DDP's wrapper in a job
    params = [p for group in optimizer.param_groups for p in group["params"]]
    groups = optimizer.param_groups
    accumulate = max(1, cfg.accumulate)
    max_steps = cfg.max_steps or state.total_steps
    step_callbacks = callbacks.has("on_step_end")
    task_step = getattr(task, "train_step", None)  # the task steps the optimizer itself (GANs)
    after_step = getattr(task, "after_step", None)
    if task_step is not None and (accumulate > 1 or scaler is not None or parallel is not None):
        raise ValueError(
            f"{type(task).__name__} runs its own optimizer steps: it takes trainer.accumulate=1, no fp16 "
            f"loss scaling and one process (got accumulate={accumulate}, precision={state.precision.name}"
            + (", a data-parallel job)" if parallel is not None else ")")
        )
    plain_step = scaler is None and not cfg.clip_grad_norm and not cfg.clip_grad_value
    autocast, full_precision = state.precision.autocast, state.precision.dtype is None
    log_every, checkpoint_every = cfg.log_every, cfg.checkpoint_every
    # ember's in-memory loader already yields batches on the device: skip the per-batch walk
    move = not (isinstance(loader, TensorLoader) and loader.device == state.device)
    last_batch = _len(loader) - 1  # an epoch's last micro-batch all-reduces, even in a ragged group
    weigh = getattr(loader, "shard_weight", None) if parallel is not None else None
    vote = parallel.stop_vote() if parallel is not None else None  # ranks stop at the same step
    window: list[torch.Tensor] = []  # per-micro-batch losses since the last sync, on the device
    window_start = state.step
    window_samples = 0
    window_time = time.perf_counter()

    def sync(force_log: bool = False) -> None:
        """Check the window's losses are finite; log their mean (the only host sync)."""
        nonlocal window, window_start, window_samples, window_time
        if not window:
            return
        losses = torch.stack(window).float()
        if parallel is None:
            mean, samples = losses.mean().item(), window_samples  # one host sync; NaN/Inf anywhere shows
        else:  # every rank's mean and samples in one all-reduce: a NaN on any rank stops them all
            mean_t = losses.mean()
            total = parallel.sum(torch.stack([mean_t, mean_t.new_tensor(float(window_samples))])).tolist()
            mean, samples = total[0] / parallel.world_size, total[1]
        if not math.isfinite(mean):
            nonfinite = (~torch.isfinite(losses)).nonzero()
            bad = int(nonfinite[0, 0]) if len(nonfinite) else int(losses.abs().argmax())  # or overflowed
            step = window_start + bad // accumulate + 1
            state.should_stop, state.stop_reason = True, f"non-finite loss at step {step}"
            raise NonFiniteLossError(
                f"loss became {losses[bad].item()} at optimizer step {step} (epoch {state.epoch + 1}); "
                "training stopped and the last good checkpoint is kept. Try a lower lr, clip_grad_norm, "
                "or precision=fp32."
            )
        now = time.perf_counter()
        rate = samples / max(now - window_time, 1e-9)
        metrics = {"train/loss": mean, "lr": state.lr, "samples_per_s": rate}
        if state.flops_per_sample and state.peak_flops:  # model FLOPs utilization (ember.train.flops)
            metrics["mfu"] = rate * state.flops_per_sample / state.peak_flops
        state.metrics.update(metrics)
        callbacks("on_log", state, metrics)
        window, window_start, window_samples, window_time = [], state.step, 0, now

    callbacks("on_fit_start", state)
    if state.schedule is not None:
        _set_lr(groups, state.schedule(state.step))
    while state.epoch < state.epochs and state.step < max_steps and not state.should_stop:
        if not step_model.training:  # evaluate() restores the mode it found; a callback may not
            step_model.train()
        micro = 0
        completed = False
        for batch in iterate_epoch(loader, state.epoch, state.batch_in_epoch):
            if move:
                batch = to_device(batch, state.device)
            if task_step is not None:  # forward, backward and the optimizer step(s), by the task
                loss = task_step(
                    step_model,
                    batch,
                    optimizer,
                    autocast=contextlib.nullcontext if full_precision else autocast,
                )
                window.append(loss.detach())
            else:
                hold = (
                    parallel is not None
                    and (micro + 1) % accumulate != 0
                    and state.batch_in_epoch != last_batch
                )
                with parallel.hold_gradients(step_model) if hold else _ALL_REDUCE:  # type: ignore[union-attr]
                    if full_precision:
                        output, target = task.forward(step_model, batch)
                        loss = task.loss(output, target)
                    else:
                        with autocast():
                            output, target = task.forward(step_model, batch)
                            loss = task.loss(output, target)
                    window.append(loss.detach())
                    if weigh is not None and (share := weigh(state.batch_in_epoch)) != 1.0:
                        loss = loss * share  # this rank's part of a global batch that splits unevenly
                    if accumulate > 1:
                        loss = loss / accumulate
                    if (
                        micro % accumulate == 0
                    ):  # a new accumulation group: before backward, as a hand loop does
                        optimizer.zero_grad(set_to_none=True)
                    if scaler is not None:
                        scaler.scale(loss).backward()
                    else:
                        loss.backward()
            n = _batch_size(batch)
            window_samples += n
            state.samples_seen += n
            state.batch_in_epoch += 1
            micro += 1
            if micro % accumulate:
                continue
            if task_step is None:  # (a task with train_step has stepped already)
                if plain_step:  # no scaler, no clipping: what a hand-written loop does
                    optimizer.step()
                else:
                    _optimizer_step(optimizer, scaler, params, cfg)
            if after_step is not None:
                after_step(model)
            state.step += 1
            if state.schedule is not None:
                _set_lr(groups, state.schedule(state.step))
            if step_callbacks:
                callbacks("on_step_end", state)
            if state.step % log_every == 0:
                sync()
            if checkpoint_every and checkpointer is not None and state.step % checkpoint_every == 0:
                sync()
                checkpointer.save(state, reason="step")
            if (state.should_stop if vote is None else vote.step(state)) or state.step >= max_steps:
                break
        else:
            completed = True
            if micro % accumulate:  # a ragged last group still makes a step
                _optimizer_step(optimizer, scaler, params, cfg)
                if after_step is not None:
                    after_step(model)
                state.step += 1
        sync()
        if vote is not None:  # a stop one rank asked for (a callback, SIGTERM) is every rank's
            vote.agree(state)
        if completed or 0 < _len(loader) <= state.batch_in_epoch:
            state.epoch += 1
            state.batch_in_epoch = 0
        if val_loader is not None and not state.interrupted:  # stopped by a signal: no validation
            metrics = {f"val/{k}": v for k, v in evaluate(model, val_loader, task, state=state).items()}
            state.metrics.update(metrics)
            state.history.append({"step": state.step, "epoch": state.epoch, **metrics})
            callbacks("on_validation_end", state, metrics)
        callbacks("on_epoch_end", state)
        if checkpointer is not None:
            more = state.epoch < state.epochs and state.step < max_steps and not state.should_stop
            checkpointer.save(state, reason="epoch" if more else "final")
    optimizer.zero_grad(set_to_none=True)  # the last step's gradients: memory nothing needs now
    callbacks("on_fit_end", state)


def _len(loader: Iterable[Any]) -> int:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return 0


def _set_lr(groups: list[dict[str, Any]], factor: float) -> None:
    for group in groups:
        group["lr"] = group["base_lr"] * factor


def _optimizer_step(
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    params: list[nn.Parameter],
    cfg: TrainerConfig,
) -> None:
    if scaler is not None and (cfg.clip_grad_norm or cfg.clip_grad_value):
        scaler.unscale_(optimizer)
    if cfg.clip_grad_value:
        torch.nn.utils.clip_grad_value_(params, cfg.clip_grad_value)
    if cfg.clip_grad_norm:
        torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: Iterable[Any],
    task: Task,
    *,
    state: TrainState | None = None,
    device: torch.device | None = None,
    precision: Any = None,
) -> dict[str, float]:
    """The task's metrics (and mean loss) over ``loader`` in eval mode; training mode is restored."""
    return computed(evaluate_pass(model, loader, task, state=state, device=device, precision=precision))


def computed(evaluation: Evaluation) -> dict[str, float]:
    """An evaluation's metrics as :func:`evaluate` returns them: undefined (NaN) ones left out, but the loss."""
    metrics = evaluation.compute()
    return {k: v for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v) and k != "loss")}


@torch.inference_mode()
def evaluate_pass(
    model: nn.Module,
    loader: Iterable[Any],
    task: Task,
    *,
    evaluation: Evaluation | None = None,
    state: TrainState | None = None,
    device: torch.device | None = None,
    precision: Any = None,
) -> Evaluation:
    """One pass of ``model`` over ``loader`` in eval mode, fed to ``evaluation`` (default: a fresh
    ``task.evaluation()``), which is returned: its ``compute()`` gives :func:`evaluate`'s metrics and
    the stages read what it kept (see ``ember.tasks.contract.evaluation``)."""
    device = device or (state.device if state else torch.device("cpu"))
    precision = precision or (state.precision if state else None)
    was_training = model.training
    model.eval()
    ev = evaluation if evaluation is not None else task.evaluation()
    for batch in loader:
        batch = to_device(batch, device)
        with precision.autocast() if precision is not None else contextlib.nullcontext():
            output, target = task.forward(model, batch)
            loss = task.loss(output, target)
        ev.update(output, target, loss)
    model.train(was_training)
    return ev


@torch.inference_mode()
def predict(
    model: nn.Module, loader: Iterable[Any], *, device: torch.device, precision: Any = None
) -> torch.Tensor:
    """Model outputs over ``loader`` concatenated on the CPU. Batches may be inputs or (inputs, target)."""
    was_training = model.training
    model.eval()
    outputs = []
    for batch in loader:
        inputs = batch[0] if isinstance(batch, list | tuple) else batch
        inputs = to_device(inputs, device)
        with precision.autocast() if precision is not None else contextlib.nullcontext():
            outputs.append(model(inputs).float().cpu())
    model.train(was_training)
    return torch.cat(outputs)
