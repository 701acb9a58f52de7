"""Trainer: the Python face of training — any nn.Module, any data, one call.

Example:
    >>> import torch, tempfile
    >>> from torch import nn
    >>> X, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    >>> trainer = Trainer(nn.Linear(4, 2), lr=0.1, epochs=2, batch_size=16, runs_dir=tempfile.mkdtemp())
    >>> result = trainer.fit((X, y), (X, y))
    >>> sorted(trainer.test((X, y)))[:2]
    ['accuracy', 'accuracy/class_0']
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ember import tasks
from ember._registry import did_you_mean
from ember.config import Config, TrainerConfig, diff, dump_yaml, load_config, to_dict
from ember.data import ArrayData, fingerprint, make_loader
from ember.nn import checkpointing
from ember.tasks.base import Task
from ember.track import Run, RunStore, environment, seed_everything, set_deterministic, source_version
from ember.train import checkpoint as ckpt
from ember.train.callbacks import CallbackList, EarlyStopping, ProgressBar
from ember.train.loggers import build_loggers
from ember.train.loop import evaluate, fit, predict
from ember.train.optim import build_optimizer, build_schedule
from ember.train.precision import resolve_device, resolve_precision
from ember.train.state import TrainState

# Trainer keyword → config key. Every TrainerConfig field is accepted under its own name too.
ALIASES = {
    "name": "name",
    "optimizer": "optim.name",
    "lr": "optim.lr",
    "weight_decay": "optim.weight_decay",
    "momentum": "optim.momentum",
    "betas": "optim.betas",
    "eps": "optim.eps",
    "schedule": "schedule.name",
    "warmup": "schedule.warmup",
    "min_lr_ratio": "schedule.min_lr_ratio",
    "milestones": "schedule.milestones",
    "gamma": "schedule.gamma",
    "step_size": "schedule.step_size",
    "batch_size": "data.batch_size",
    "eval_batch_size": "data.eval_batch_size",
    "num_workers": "data.num_workers",
    **{f.name: f"trainer.{f.name}" for f in dataclasses.fields(TrainerConfig)},
}

Data = Any  # a Dataset, DataLoader, ArrayData, or an (X, y) pair of tensors


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` returns."""

    run_id: str
    run_dir: Path
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    best: float | None = None
    best_step: int | None = None
    steps: int = 0
    seconds: float = 0.0
    stop_reason: str = ""


class Trainer:
    """Train, validate, test and predict with one readable loop.

    Args:
        model: any ``nn.Module``.
        task: a task name (``classification``, ``regression`` ...) or a task object.
        callbacks: extra callbacks (see :mod:`ember.train.callbacks`).
        augment: a batch transform ``(x, y, generator) -> (x, y)`` for training batches.
        runs_dir: the run store's folder (default ``$EMBER_RUNS`` or ``runs``).
        progress: show a progress bar (None: only on a terminal).
        config: a full :class:`~ember.config.Config` (the recipe path); keyword options override it.
        **options: optimizer, lr, weight_decay, momentum, betas, schedule, warmup, min_lr_ratio,
            milestones, gamma, batch_size, eval_batch_size, and every ``trainer.*`` config key
            (epochs, max_steps, precision, clip_grad_norm, accumulate, seed, deterministic,
            early_stopping_metric, checkpoint_every, device ...). Unknown names are errors.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        task: str | Task = "classification",
        callbacks: Sequence[Any] = (),
        augment: Callable[..., Any] | None = None,
        runs_dir: str | Path | None = None,
        progress: bool | None = None,
        config: Config | None = None,
        **options: Any,
    ) -> None:
        overrides = {}
        for key, value in options.items():
            if key not in ALIASES:
                raise TypeError(f"Trainer got an unknown option '{key}'{did_you_mean(key, sorted(ALIASES))}")
            overrides[ALIASES[key]] = value
        if isinstance(task, str):
            overrides["task.name"] = task
        if config is None:
            base: dict[str, Any] = {"model": {"name": type(model).__name__}}
            config = load_config(base, overrides)
        else:
            config = load_config(config, overrides)
        self.config = config
        self.model = model
        self.task: Task = (
            task if not isinstance(task, str) else tasks.create(config.task.name, **config.task.options)
        )
        self.callbacks = list(callbacks)
        self.augment = augment
        self.store = RunStore(runs_dir)
        self.progress = progress
        self.device = resolve_device(config.trainer.device)
        self.precision = resolve_precision(config.trainer.precision, self.device)
        self.run: Run | None = None
        self.data_sha256: str | None = None  # set by the recipe (data + split hashes), else computed

    # ------------------------------------------------------------------ runs

    def start_run(self) -> Run:
        """Create this trainer's run in the store now (the recipe saves splits into it before fit)."""
        if self.run is None:
            text = dump_yaml(self.config)
            self.run = self.store.create(
                self.config.name or type(self.model).__name__,
                config_yaml=text,
                params=_flatten(to_dict(self.config)),
                seed=self.config.trainer.seed,
                config_sha256=hashlib.sha256(text.encode()).hexdigest(),
                source=source_version(),
                environment=environment() | {"precision": self.precision.name},  # `auto` resolved
            )
        return self.run

    def _resume_run(self, ref: str) -> tuple[Run, ckpt.Checkpoint | None]:
        record = self.store.get(ref)
        old = load_config(_yaml_dict(record.config))
        changes = diff(old, self.config)
        if changes:
            raise ValueError(
                f"--resume {record.id}: the config differs from the run's, so the result would not be the "
                "run you started. Differences (run -> now):\n  " + "\n  ".join(changes)
            )
        run = self.store.open(record.id)
        return run, ckpt.latest_checkpoint(run.dir / "checkpoints")

    # ------------------------------------------------------------------ fit

    def fit(self, train_data: Data, val_data: Data | None = None, *, resume: str | None = None) -> FitResult:
        """Train on ``train_data``, validating on ``val_data`` after each epoch.

        Args:
            train_data: a Dataset, DataLoader, :class:`~ember.data.ArrayData` or ``(X, y)`` tensors.
            val_data: the same kinds, or None.
            resume: a run id (or prefix, or ``latest``) to continue from its newest checkpoint.

        Returns:
            A :class:`FitResult` with the run id, final and best metrics.
        """
        cfg = self.config
        if cfg.trainer.threads:
            torch.set_num_threads(cfg.trainer.threads)
        set_deterministic(cfg.trainer.deterministic)
        seed_everything(cfg.trainer.seed)
        started = time.perf_counter()
        model = self.model.to(self.device)
        if cfg.trainer.activation_checkpointing:
            checkpointing.apply(model)  # blocks recompute activations in backward (same loss, less memory)
        loader = self._loader(train_data, train=True)
        val_loader = self._loader(val_data, train=False) if val_data is not None else None
        per_epoch = max(1, math.ceil(len(loader) / max(1, cfg.trainer.accumulate)))  # type: ignore[arg-type]
        total = cfg.trainer.max_steps or cfg.trainer.epochs * per_epoch
        optimizer = build_optimizer(model, cfg.optim)
        constant = cfg.schedule.name == "constant" and not cfg.schedule.warmup
        state = TrainState(
            model=model,
            optimizer=optimizer,
            precision=self.precision,
            device=self.device,
            epochs=cfg.trainer.epochs,
            total_steps=total,
            steps_per_epoch=per_epoch,
            schedule=None
            if constant
            else build_schedule(cfg.schedule, total_steps=total, steps_per_epoch=per_epoch),
            scaler=self.precision.scaler(),
        )
        resumed_from = None
        if resume is not None:
            self.run, last = self._resume_run(resume)
            if last is not None:
                ckpt.restore(last, model=model, optimizer=optimizer, scaler=state.scaler)
                state.load_position(last.meta["position"])
                resumed_from = last.path
        run = self.start_run()
        if self.data_sha256 is None and isinstance(train_data, ArrayData | tuple):
            data = train_data if isinstance(train_data, ArrayData) else ArrayData(*train_data)
            self.data_sha256 = fingerprint(data.x, data.y)
        if self.data_sha256 is not None:
            run.update(data_sha256=self.data_sha256)
        monitor, mode = self._monitor()
        writer = ckpt.BackgroundWriter()  # checkpoints and metric commits overlap the next steps
        checkpointer = CheckpointManager(
            run.dir / "checkpoints",
            keep_last=cfg.trainer.keep_last,
            monitor=monitor,
            mode=mode,
            resumed_from=resumed_from,
            writer=writer,
            min_interval=cfg.trainer.checkpoint_min_interval,
        )
        callbacks = list(self.callbacks)
        if cfg.trainer.early_stopping_metric:
            callbacks.append(
                EarlyStopping(cfg.trainer.early_stopping_metric, patience=cfg.trainer.early_stopping_patience)
            )
        callbacks += [RunLogger(run, writer), ProgressBar(self.progress, headline=self.task.headline)]
        callbacks += build_loggers(cfg, run.dir, run.id)  # TensorBoard, MLflow: imported only when chosen
        try:
            fit(
                state,
                loader,
                self.task,
                CallbackList(callbacks),
                cfg=cfg.trainer,
                val_loader=val_loader,
                checkpointer=checkpointer,
            )
        except BaseException as e:  # NaN loss, a bug, Ctrl-C: the run says so, the checkpoints stay
            with contextlib.suppress(Exception):  # the checkpoint being written is finished first
                writer.close()
            run.finish(
                "interrupted" if isinstance(e, KeyboardInterrupt) else "failed",
                error=str(e) or type(e).__name__,
            )
            raise
        writer.close()
        weights = run.dir / "model.safetensors"
        ckpt.atomic_write_bytes(weights, save(ckpt.safetensors_ready(model.state_dict())))
        run.artifact(weights, "weights")
        seconds = time.perf_counter() - started
        summary = {k: v for k, v in state.metrics.items() if not k.startswith("accuracy/")}
        run.update(headline=monitor, best=state.best)
        run.finish("completed", summary={**summary, "steps": state.step, "stop_reason": state.stop_reason})
        return FitResult(
            run_id=run.id,
            run_dir=run.dir,
            metrics=dict(state.metrics),
            history=state.history,
            best=state.best,
            best_step=state.best_step,
            steps=state.step,
            seconds=seconds,
            stop_reason=state.stop_reason,
        )

    def _monitor(self) -> tuple[str, str]:
        monitor = self.config.trainer.monitor or f"val/{self.task.headline}"
        if monitor.removeprefix("val/") == self.task.headline:
            return monitor, self.task.mode
        return monitor, "min" if "loss" in monitor else "max"

    def _loader(self, data: Data, *, train: bool) -> Iterable[Any]:
        cfg = self.config
        if isinstance(data, DataLoader):
            return data  # the user's own loader, used as is (resume then skips batches)
        if isinstance(data, TensorDataset) and len(data.tensors) == 2:
            data = data.tensors
        if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
            data = ArrayData(*data)  # the in-memory fast path
        return make_loader(
            data,
            batch_size=cfg.data.batch_size if train else cfg.data.eval_batch_size,
            shuffle=train,
            seed=cfg.trainer.seed,
            transform=self.augment if train else None,
            num_workers=cfg.data.num_workers,
            device=self.device,
        )

    # ------------------------------------------------------------------ evaluation

    def validate(self, data: Data) -> dict[str, float]:
        """Metrics of the model on ``data`` (eval mode, no gradients)."""
        return evaluate(
            self.model,
            self._loader(data, train=False),
            self.task,
            device=self.device,
            precision=self.precision,
        )

    def test(self, data: Data) -> dict[str, float]:
        """Like :meth:`validate`; also logs ``test/*`` metrics into the run when there is one."""
        metrics = self.validate(data)
        if self.run is not None:
            self.run.log({f"test/{k}": v for k, v in metrics.items()}, step=0)
            self.run.flush()
        return metrics

    def predict(self, data: Data) -> torch.Tensor:
        """Model outputs for every example of ``data``, in order."""
        if isinstance(data, torch.Tensor):
            data = ArrayData(data, torch.zeros(len(data)))
        return predict(
            self.model, self._loader(data, train=False), device=self.device, precision=self.precision
        )


class RunLogger:
    """Buffers logged metrics into the run; commits them at epoch ends (one transaction each).

    Commits are at least ``every_s`` seconds apart (short epochs would otherwise pay a database
    transaction each) and always at the end of fit. With a ``writer`` the commit runs on its
    background thread, in order with the checkpoints.
    """

    def __init__(
        self, run: Run, writer: ckpt.BackgroundWriter | None = None, *, every_s: float = 1.0
    ) -> None:
        self.run = run
        self.writer = writer
        self.every_s = every_s
        self.last = time.perf_counter()

    def on_log(self, state: TrainState, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=state.step, epoch=state.epoch)

    def on_validation_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        self.run.log(
            {k: v for k, v in metrics.items() if not math.isnan(v)}, step=state.step, epoch=state.epoch
        )

    def on_epoch_end(self, state: TrainState) -> None:
        if time.perf_counter() - self.last >= self.every_s:
            self.commit()

    def on_fit_end(self, state: TrainState) -> None:
        self.commit()

    def commit(self) -> None:
        self.last = time.perf_counter()
        if self.writer is None:
            self.run.flush()
        else:
            self.writer.submit(self.run.write, self.run.take())


class CheckpointManager:
    """Writes step checkpoints, tracks the best by ``monitor``, prunes old ones.

    An epoch end less than ``min_interval`` seconds after the previous checkpoint is skipped unless
    its metric is a new best; ``step`` and ``final`` checkpoints are always written.

    Never deletes the best checkpoint nor the one the run resumed from. With a ``writer`` the state
    is copied now and written on the writer's thread; without one, written before returning.
    """

    def __init__(
        self,
        folder: Path,
        *,
        keep_last: int,
        monitor: str,
        mode: str,
        resumed_from: Path | None,
        writer: ckpt.BackgroundWriter | None = None,
        min_interval: float = 0.0,
    ) -> None:
        self.folder = folder
        self.min_interval = min_interval
        self.written = time.perf_counter()  # fit's start counts as the previous checkpoint
        self.keep_last = max(1, keep_last)
        self.monitor = monitor
        self.sign = 1.0 if mode == "max" else -1.0
        self.protect = {resumed_from} if resumed_from is not None else set()
        self.best_path: Path | None = None
        self.writer = writer

    def save(self, state: TrainState, *, reason: str) -> None:
        path = self.folder / f"step-{state.step:06d}.safetensors"
        value = state.metrics.get(self.monitor) if reason != "step" else None
        improved = False
        if value is not None and not math.isnan(value):
            if state.best is None or self.sign * (value - state.best) > 0:
                state.best, state.best_step, self.best_path = value, state.step, path
                improved = True
        elif state.best_step is not None and self.best_path is None:
            self.best_path = self.folder / f"step-{state.best_step:06d}.safetensors"
        now = time.perf_counter()
        if reason == "epoch" and not improved and now - self.written < self.min_interval:
            return  # a short epoch: the next epoch end (or the last) writes one
        self.written = now
        meta = {"position": state.position(), "reason": reason, "metrics": _finite(state.metrics)}
        # serialized now (the one copy; training goes on changing the tensors), written later
        data = ckpt.encode(model=state.model, optimizer=state.optimizer, scaler=state.scaler, meta=meta)
        protect = self.protect | ({self.best_path} if self.best_path else set())
        if self.writer is None:
            self._write(path, data, protect)
        else:
            self.writer.submit(self._write, path, data, protect)

    def _write(self, path: Path, data: bytes, protect: set[Path]) -> None:
        ckpt.atomic_write_bytes(path, data)
        ckpt.prune_checkpoints(self.folder, keep_last=self.keep_last, protect=protect)


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if isinstance(v, float) and math.isfinite(v)}


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _yaml_dict(text: str) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(text) or {}
