"""Trainer: the Python face of training — any nn.Module, any data, one call.

(The file is over 600 lines because it is the one entrance to training: the typed config sections
and flat keywords, the lazy run, resume, distributed setup and the run's final writes, in the order
a fit takes them; the loop itself, checkpointing, logging, signals and the distributed pieces are
their own modules.)

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
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ember import tasks
from ember._io import atomic_write_bytes
from ember._registry import did_you_mean
from ember.config import (
    Config,
    ConfigError,
    DataConfig,
    ModelConfig,
    OptimConfig,
    ScheduleConfig,
    TrainerConfig,
    diff,
    dump_yaml,
    load_config,
    parse_yaml,
    replace_checked,
    to_dict,
)
from ember.data import ArrayData, fingerprint, make_loader
from ember.data.sharding import shard_loader
from ember.nn import checkpointing
from ember.tasks.base import Task, split_batch
from ember.tasks.spec import ModelSpec, infer_inputs, zoo_origin
from ember.track import Run, RunStore, environment, seed_everything, set_deterministic, source_version
from ember.train import checkpoint as ckpt
from ember.train import distributed, fsdp
from ember.train.callbacks import CallbackList, EarlyStopping, ProgressBar
from ember.train.checkpointer import CheckpointManager
from ember.train.compiling import CompileTimer, compile_model, fallback_to_eager
from ember.train.ema import EMA
from ember.train.flops import matmul_peak, signature, train_flops_per_sample
from ember.train.loggers import build_loggers
from ember.train.loop import evaluate, fit, predict, to_device
from ember.train.measured import measured, positive
from ember.train.optim import build_optimizer, build_schedule
from ember.train.precision import (
    BF16_STEP_MIN_SPEEDUP,
    bf16_step_speedup,
    resolve_device,
    resolve_precision,
    step_key,
)
from ember.train.profile import MarkedLoader, StepProfile, StepProfiler
from ember.train.records import SPEC_FILE, record_split, task_origin, write_spec
from ember.train.run_logger import CommitFirst, RunLogger
from ember.train.signals import deferred_signals
from ember.train.state import TrainState

# Trainer keyword → (config section, field). Every TrainerConfig field is accepted under its own name too.
OPTIONS: dict[str, tuple[str, str]] = {
    "optimizer": ("optim", "name"),
    "lr": ("optim", "lr"),
    "weight_decay": ("optim", "weight_decay"),
    "momentum": ("optim", "momentum"),
    "betas": ("optim", "betas"),
    "eps": ("optim", "eps"),
    "schedule": ("schedule", "name"),
    "warmup": ("schedule", "warmup"),
    "min_lr_ratio": ("schedule", "min_lr_ratio"),
    "milestones": ("schedule", "milestones"),
    "gamma": ("schedule", "gamma"),
    "step_size": ("schedule", "step_size"),
    "batch_size": ("data", "batch_size"),
    "eval_batch_size": ("data", "eval_batch_size"),
    "num_workers": ("data", "num_workers"),
    **{f.name: ("trainer", f.name) for f in dataclasses.fields(TrainerConfig)},
}
DATA_LIMIT = 64 << 20
"""Bytes up to which a Python run saves its data splits into the run folder (so `ember eval`,
`report`, `check` and `package` can read them back); larger splits are fingerprinted only."""

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
    profile: StepProfile | None = None
    """Where the profiled steps' time went (``trainer.profile=true``)."""


def compose_config(
    base: Config | None = None,
    *,
    name: str = "",
    sections: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
) -> Config:
    """One :class:`Config` from a base, whole typed sections, and the Trainer's flat keyword options.

    Args:
        base: the starting config (defaults when None).
        name: the runs' name (kept from ``base`` when empty).
        sections: ``{"optim": OptimConfig(...), ...}`` replacing whole sections.
        options: flat keywords (``lr=3e-3``, ``epochs=10`` ...; see :data:`OPTIONS`), each checked as
            a config file's value would be.

    Raises:
        TypeError: an unknown keyword (with the closest one).
        ConfigError: a value of the wrong type.
    """
    cfg = base or Config()
    for key, section in (sections or {}).items():
        expected = type(getattr(cfg, key))
        if not isinstance(section, expected):
            raise TypeError(f"Trainer({key}=...) takes a {expected.__name__}; got {type(section).__name__}")
        cfg = dataclasses.replace(cfg, **{key: section})
    grouped: dict[str, dict[str, Any]] = {}
    for key, value in (options or {}).items():
        if key not in OPTIONS:
            raise TypeError(f"Trainer got an unknown option '{key}'{did_you_mean(key, sorted(OPTIONS))}")
        section, field_name = OPTIONS[key]
        grouped.setdefault(section, {})[field_name] = value
    for section, values in grouped.items():
        cfg = dataclasses.replace(cfg, **{section: replace_checked(getattr(cfg, section), section, **values)})
    return dataclasses.replace(cfg, name=name) if name else cfg


def new_run(store: RunStore, config: Config, precision: str) -> Run:
    """A run in ``store`` for ``config``: its resolved YAML, flattened params, seed, source version
    and environment (with the precision ``auto`` resolved to, and a torchrun job's size and id)."""
    text = dump_yaml(config)
    return store.create(
        config.name or config.model.name,
        config_yaml=text,
        params=flatten_params(to_dict(config)),
        seed=config.trainer.seed,
        config_sha256=hashlib.sha256(text.encode()).hexdigest(),
        source=source_version(),
        environment=environment() | {"precision": precision} | distributed.environment(),
    )


def step_plan(batches_per_epoch: int, cfg: TrainerConfig) -> tuple[int, int]:
    """``(optimizer steps per epoch, total steps)`` of a run: the one place they are computed."""
    per_epoch = max(1, math.ceil(batches_per_epoch / max(1, cfg.accumulate)))
    return per_epoch, cfg.max_steps or cfg.epochs * per_epoch


class Trainer:
    """Train, validate, test and predict with one readable loop.

    The typed config sections are the Trainer's settings; the flat keywords (``lr=3e-3``,
    ``epochs=10`` ...) are a shorthand that fills them. A run is created in the store when ``fit``
    first needs one (or pass ``run=`` to train into a run made already, as the recipe does). A run
    trained from Python records what later stages need: the model's spec (``spec.json``) and, up
    to :data:`DATA_LIMIT` bytes a split, its data (``data/<split>.safetensors``), so ``ember eval``,
    ``report``, ``check`` and ``package`` work on it.

    Args:
        model: any ``nn.Module``.
        task: a task name (``classification``, ``regression`` ...) or a task object.
        config: a whole :class:`~ember.config.Config` to start from (the recipe's).
        optim, schedule, trainer, data: typed sections replacing the config's.
        name: the run's name (default: the config's, else the model's class).
        callbacks: extra callbacks (see :mod:`ember.train.callbacks`).
        transforms: ``t(model, optimizer, loader, total_steps=...) -> (model, optimizer, loader)``
            applied in order before the loop runs (DP-SGD, see `ember.train.hooks`); each is
            also a callback.
        augment: a batch transform ``(x, y, generator) -> (x, y)`` for training batches.
        run: an open run to train into (default: one created by ``fit``).
        runs_dir: the run store's folder (default ``$EMBER_RUNS`` or ``runs``).
        progress: show a progress bar (None: only on a terminal).
        spec: the model's :class:`~ember.tasks.spec.ModelSpec` (default: inferred from the model and
            the first training batch).
        record_data: save the data splits given to ``fit`` and ``test`` into the run (Python runs;
            the recipe's runs save their split indices instead).
        **options: flat keywords for the sections: optimizer, lr, weight_decay, momentum, betas, eps,
            schedule, warmup, min_lr_ratio, milestones, gamma, step_size, batch_size,
            eval_batch_size, num_workers and every ``trainer.*`` key (epochs, max_steps, precision,
            clip_grad_norm, accumulate, seed, deterministic, checkpoint_every, device ...).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        task: str | Task = "classification",
        config: Config | None = None,
        optim: OptimConfig | None = None,
        schedule: ScheduleConfig | str | None = None,
        trainer: TrainerConfig | None = None,
        data: DataConfig | None = None,
        name: str = "",
        callbacks: Sequence[Any] = (),
        augment: Callable[..., Any] | None = None,
        run: Run | None = None,
        runs_dir: str | Path | None = None,
        progress: bool | None = None,
        spec: ModelSpec | None = None,
        record_data: bool = True,
        transforms: Sequence[Any] = (),
        **options: Any,
    ) -> None:
        if isinstance(schedule, str):  # the flat form's schedule name
            options["schedule"] = schedule
            schedule = None
        given = {"optim": optim, "schedule": schedule, "trainer": trainer, "data": data}
        cfg = compose_config(
            config,
            name=name or (config.name if config else "") or type(model).__name__,
            sections={k: v for k, v in given.items() if v is not None},
            options=options,
        )
        if isinstance(task, str):
            cfg = dataclasses.replace(cfg, task=dataclasses.replace(cfg.task, name=task))
        if config is None and cfg.model.name == ModelConfig().name:
            origin = zoo_origin(model)
            cfg = dataclasses.replace(
                cfg, model=ModelConfig(name=origin[0] if origin else type(model).__name__)
            )
        self.config = cfg
        self.model = model
        self.task: Task = (
            task if not isinstance(task, str) else tasks.create(cfg.task.name, **cfg.task.options)
        )
        self.callbacks = list(callbacks)
        self.transforms = list(transforms)
        self.augment = augment
        self.store = run.store if run is not None else RunStore(runs_dir)
        self.progress = progress
        self.device = resolve_device(cfg.trainer.device)
        self.precision = resolve_precision(cfg.trainer.precision, self.device)
        self.run: Run | None = run
        self.spec = spec
        self.record_data = record_data
        self.data_sha256: str | None = None  # set by the recipe (data + split hashes), else computed
        self.parallel: distributed.Parallel | None = None  # set by fit in a torchrun job
        self.bf16_step_speedup: float | None = None  # measured by fit when `auto` weighs bf16 on CPU

    # ------------------------------------------------------------------ runs

    def start_run(self) -> Run:
        """This trainer's run: created in the store on the first call (``fit`` calls it). In a
        torchrun job rank 0 creates it and the other ranks follow it (`distributed.FollowerRun`)."""
        parallel = self.parallel
        if self.run is None and (parallel is None or parallel.is_main):
            self.run = new_run(self.store, self.config, self.precision.name)
        if parallel is not None:  # every rank calls this once; rank 0's run is the job's
            run_id = parallel.broadcast_text(self.run.id if self.run is not None else "")
            if not parallel.is_main:
                self.run = distributed.FollowerRun(self.store, run_id)
        assert self.run is not None
        return self.run

    def _resume_run(self, ref: str) -> tuple[Run, ckpt.Checkpoint | None]:
        record = self.store.get(ref)
        old = load_config(parse_yaml(record.config))
        changes = diff(old, self.config)
        if changes:
            raise ValueError(
                f"--resume {record.id}: the config differs from the run's, so the result would not be the "
                "run you started. Differences (run -> now):\n  " + "\n  ".join(changes)
            )
        # the process that trains it now (rank 0 of a job) marks it running under its pid
        run = self.store.open(record.id, resuming=self.parallel is None or self.parallel.is_main)
        return run, ckpt.latest_checkpoint(run.dir / "checkpoints")

    def _resume(self, ref: str, state: TrainState) -> Path | None:
        """Continue run ``ref``: its newest checkpoint's state into ``state``; that checkpoint's path."""
        self.run, last = self._resume_run(ref)
        recorded = (self.store.get(self.run.id).environment or {}).get("precision")
        if self.config.trainer.precision == "auto" and recorded in {"fp32", "bf16"}:
            self.precision = state.precision = resolve_precision(recorded, self.device)  # as it began
        if self.parallel is not None and self.parallel.strategy == "fsdp":
            path = fsdp.latest_sharded(self.run.dir / "checkpoints")
            if path is not None:
                fsdp.restore_sharded(path, state, self.parallel)
            return path
        if last is None:
            return None
        ckpt.restore(last, model=state.model, optimizer=state.optimizer, scaler=state.scaler)
        state.load_position(last.meta["position"])
        if state.ema is not None:
            state.ema.load(last.tensors)
        if self.parallel is not None:
            self.parallel.reseed(state.step)
        return last.path

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
        with self.store.kept_open():  # the run store's transactions stay cheap for the whole fit
            return self._fit(train_data, val_data, resume)

    def _fit(self, train_data: Data, val_data: Data | None, resume: str | None) -> FitResult:
        cfg = self.config
        # one rank of a torchrun job joins its process group (gloo / NCCL); one process: None
        parallel = self.parallel = distributed.setup(cfg.trainer.strategy, self.device, seed=cfg.trainer.seed)
        self.device = distributed.rank_device(self.device, parallel)
        main = parallel is None or parallel.is_main
        if parallel is not None and self.transforms:
            raise ConfigError(
                f"training transforms (DP-SGD: privacy.*) run in one process; got a job of "
                f"{parallel.world_size} ranks. Train without --nproc / torchrun"
            )
        if cfg.trainer.threads:
            torch.set_num_threads(cfg.trainer.threads)
        set_deterministic(cfg.trainer.deterministic)
        seed_everything(cfg.trainer.seed)
        if parallel is not None:
            parallel.reseed(0)  # dropout: each rank its own stream
        started = time.perf_counter()
        model = self.model.to(self.device)
        if cfg.trainer.activation_checkpointing:
            checkpointing.apply(model)  # blocks recompute activations in backward (same loss, less memory)
        loader = self._loader(train_data, train=True)
        val_loader = self._loader(val_data, train=False) if val_data is not None else None
        per_epoch, total = step_plan(len(loader), cfg.trainer)  # type: ignore[arg-type]
        if resume is None:
            self._weigh_bf16(model, loader)
        if parallel is not None:
            distributed.wrap(model, parallel)  # DDP, or fully_shard in place: before the optimizer
        optimizer = build_optimizer(model, cfg.optim)
        for transform in self.transforms:
            model, optimizer, loader = transform(model, optimizer, loader, total_steps=total)
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
        if cfg.trainer.ema:
            state.ema = EMA(model, cfg.trainer.ema, evaluate=self._evaluator(val_loader))
        if resume is None and self.run is None:  # torchrun restarted this job's workers: go on
            resume = distributed.restarted_run(self.store)
        resumed_from = self._resume(resume, state) if resume is not None else None
        run = self.start_run()
        if main:
            self._record(run, train_data, val_data, loader)
        self._measure_mfu_inputs(state, loader)
        monitor, mode = self._monitor()
        writer = ckpt.BackgroundWriter()  # checkpoints and metric commits overlap the next steps
        checkpointer = self._checkpointer(run, monitor, mode, resumed_from, writer)
        callbacks = [state.ema] if state.ema is not None else []  # first: its metrics join the logged ones
        callbacks += list(self.callbacks) + [t for t in self.transforms if t not in self.callbacks]
        if cfg.trainer.early_stopping_metric:
            callbacks.append(
                EarlyStopping(cfg.trainer.early_stopping_metric, patience=cfg.trainer.early_stopping_patience)
            )
        profiler = StepProfiler() if cfg.trainer.profile else None
        if profiler is not None:
            loader = MarkedLoader(loader)
            callbacks.append(profiler)
        compile_timer = CompileTimer() if cfg.trainer.compile else None
        if compile_timer is not None:
            compile_model(model if parallel is None else parallel.train_module(model))
            callbacks.append(compile_timer)
        if main:  # rank 0 alone writes the run, and commits its metrics before each checkpoint
            run_logger = RunLogger(run, writer)
            callbacks.append(run_logger)
            sharded = self.parallel is not None and self.parallel.strategy == "fsdp"  # not on the writer
            checkpointer = CommitFirst(checkpointer, run_logger, ordered=not sharded)
        callbacks.append(ProgressBar(self.progress if main else False, headline=self.task.headline))
        if main:  # TensorBoard, MLflow: imported only when chosen
            callbacks += build_loggers(cfg, run.dir, run.id)
        with deferred_signals():  # SIGTERM after the loop: the final writes finish, then it stops
            return self._fit_to_end(
                state, loader, callbacks, cfg, val_loader, checkpointer, writer, run, model, optimizer,
                monitor, started, compile_timer, profiler,
            )  # fmt: skip

    def _fit_to_end(
        self, state: Any, loader: Any, callbacks: list[Any], cfg: Any, val_loader: Any, checkpointer: Any,
        writer: Any, run: Any, model: Any, optimizer: Any, monitor: Any, started: float,
        compile_timer: Any, profiler: Any,
    ) -> FitResult:  # fmt: skip
        """The loop, then the run's final writes (see :meth:`fit`)."""
        parallel = self.parallel
        main = parallel is None or parallel.is_main
        try:
            with fallback_to_eager(cfg.trainer.compile):
                fit(
                    state,
                    loader,
                    self.task,
                    CallbackList(callbacks),
                    cfg=cfg.trainer,
                    val_loader=val_loader,
                    checkpointer=checkpointer,
                    parallel=parallel,
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
        with run.one_record():  # the weights, the best and the status: one run.json write
            self._save_weights(run, state)
            seconds = time.perf_counter() - started
            summary = {k: v for k, v in state.metrics.items() if not k.startswith("accuracy/")}
            run.update(headline=monitor, best=state.best)
            hardware = {
                "flops_per_sample": state.flops_per_sample,
                "peak_flops": state.peak_flops,
                "compile_s": compile_timer.seconds if compile_timer is not None else None,
                "optimizer_implementation": getattr(optimizer, "ember_implementation", None),
                "bf16_step_speedup": self.bf16_step_speedup,
            }
            if main and profiler is not None and profiler.result is not None:
                path = run.dir / "profile.json"
                atomic_write_bytes(path, json.dumps(profiler.result.to_dict(), indent=1).encode())
                run.artifact(path, "profile")
            summary |= {k: v for k, v in hardware.items() if v}
            run.finish(
                "completed", summary={**summary, "steps": state.step, "stop_reason": state.stop_reason}
            )
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
            profile=profiler.result if profiler is not None else None,
        )

    def _checkpointer(
        self, run: Run, monitor: str, mode: str, resumed_from: Path | None, writer: ckpt.BackgroundWriter
    ) -> Any:
        """Rank 0 writes whole-model checkpoints (one process, DDP); under FSDP every rank its shards."""
        trainer, folder = self.config.trainer, run.dir / "checkpoints"
        if self.parallel is not None and self.parallel.strategy == "fsdp":
            return fsdp.ShardedCheckpointer(
                folder,
                self.parallel,
                keep_last=trainer.keep_last,
                monitor=monitor,
                mode=mode,
                resumed_from=resumed_from,
                min_interval=trainer.checkpoint_min_interval,
            )
        if self.parallel is not None and not self.parallel.is_main:
            return distributed.RankCheckpointer(None, self.parallel)
        manager = CheckpointManager(
            folder,
            keep_last=trainer.keep_last,
            monitor=monitor,
            mode=mode,
            resumed_from=resumed_from,
            writer=writer,
            min_interval=trainer.checkpoint_min_interval,
        )
        return manager if self.parallel is None else distributed.RankCheckpointer(manager, self.parallel)

    def _save_weights(self, run: Run, state: TrainState) -> None:
        """The final ``model.safetensors`` (and ``ema.safetensors``): whole state dicts, written by rank 0
        (gathered from every rank's shards under FSDP)."""
        files = [("model.safetensors", "weights", contextlib.nullcontext())]
        if state.ema is not None:
            files.append(("ema.safetensors", "ema", state.ema.applied()))
        for name, kind, weights in files:
            with weights:  # the state dict's tensors are the live ones: serialized inside
                tensors = fsdp.full_state_dict(state.model)
                main = self.parallel is None or self.parallel.is_main
                data = ckpt.serialize(ckpt.safetensors_ready(tensors), metadata={}) if main else b""
            if data:
                ckpt.write_sealed(run.dir / name, data)  # sealed: read back with its sha256 checked
                run.artifact(run.dir / name, kind)

    def _evaluator(self, val_loader: Iterable[Any] | None) -> Callable[[nn.Module], dict[str, float]] | None:
        if val_loader is None:
            return None
        return lambda model: evaluate(
            model, val_loader, self.task, device=self.device, precision=self.precision
        )

    def _record(self, run: Run, train_data: Data, val_data: Data | None, loader: Iterable[Any]) -> None:
        """What later stages need from this run: its data's fingerprint, its spec, its data (Python runs)."""
        with run.one_record():  # one run.json write for the three
            self._record_inputs(run, train_data, val_data, loader)

    def _record_inputs(
        self, run: Run, train_data: Data, val_data: Data | None, loader: Iterable[Any]
    ) -> None:
        if self.data_sha256 is None and isinstance(train_data, ArrayData | tuple):
            data = train_data if isinstance(train_data, ArrayData) else ArrayData(*train_data)
            self.data_sha256 = fingerprint(data.x, data.y)
        if self.data_sha256 is not None:
            run.update(data_sha256=self.data_sha256)
        if not (run.dir / SPEC_FILE).is_file():
            spec = self.spec or self._infer_spec(loader, train_data)
            if spec is not None:
                write_spec(run, spec)
        if self.record_data:
            for split, part in (("train", train_data), ("val", val_data)):
                if part is not None:
                    record_split(run, split, part)

    def _weigh_bf16(self, model: nn.Module, loader: Iterable[Any]) -> None:
        """``precision: auto`` on a CPU whose bf16 matmul wins: keep bf16 only if this model's own
        training step is at least ``BF16_STEP_MIN_SPEEDUP`` faster in it, else train in fp32.

        Measured once per architecture, batch shapes, CPU, torch and thread count, and kept
        (`ember.train.measured`); the speed-up is recorded in the run's summary. A task that steps
        its optimizers itself (a GAN) keeps the matmul's answer. In a torchrun job rank 0 measures
        and every rank follows it. A resumed run keeps the precision it started with.
        """
        if (
            self.config.trainer.precision != "auto"
            or self.precision.name != "bf16"
            or self.device.type != "cpu"
            or getattr(self.task, "train_step", None) is not None
        ):
            return
        parallel = self.parallel
        if parallel is None or parallel.is_main:
            with torch.random.fork_rng(devices=[]):  # a shuffling loader draws its order from it
                first = next(iter(loader), None)
            if first is not None:
                batch = to_device(first, self.device)
                shape_key = signature(model, batch, self.task)

                def weigh() -> float:
                    return bf16_step_speedup(model, batch, self.task)

                with contextlib.suppress(Exception):  # a model that cannot be copied: the matmul decides
                    speedup = (
                        weigh()
                        if shape_key is None
                        else measured(
                            "bf16_step_speedup",
                            self.device,
                            weigh,
                            check=positive,
                            args=(step_key(shape_key),),
                        )
                    )
                    self.bf16_step_speedup = round(speedup, 3)
        chosen = "bf16" if (self.bf16_step_speedup or 0.0) >= BF16_STEP_MIN_SPEEDUP else "fp32"
        if self.bf16_step_speedup is None:  # nothing to measure on: the matmul's answer stands
            chosen = "bf16"
        if parallel is not None:
            chosen = parallel.broadcast_text(chosen)
        self.precision = resolve_precision(chosen, self.device)
        if self.run is not None and (parallel is None or parallel.is_main):  # made before fit (recipes)
            environment = self.store.get(self.run.id).environment
            if environment.get("precision") != chosen:
                self.run.update(environment=environment | {"precision": chosen})

    def _measure_mfu_inputs(self, state: TrainState, loader: Iterable[Any]) -> None:
        """The training FLOPs per sample and the device's matmul peak, for MFU (`ember.train.flops`)."""
        first = next(iter(loader), None)
        if first is None:
            return
        state.flops_per_sample = train_flops_per_sample(state.model, first, self.task)
        if state.flops_per_sample:
            dtype = self.precision.dtype or torch.float32
            state.peak_flops = matmul_peak(self.device, dtype)

    def _infer_spec(self, loader: Iterable[Any], train_data: Data) -> ModelSpec | None:
        """The spec of a Python run: the model's zoo origin and the first training batch's shape."""
        first = next(iter(loader), None)
        if first is None:
            return None
        try:
            inputs, target = split_batch(first)
        except ValueError:
            return None
        if not isinstance(inputs, torch.Tensor):
            return None  # dict or nested inputs: a spec must be given (Trainer(spec=...))
        origin = zoo_origin(self.model)
        task_name, task_options = task_origin(self.task)
        vocab = getattr(self.model, "vocab_size", None)
        classes = _class_names(train_data, target) if task_name == "classification" else None
        return ModelSpec(
            task=task_name or type(self.task).__name__,
            inputs=infer_inputs(inputs, vocab_size=int(vocab) if isinstance(vocab, int) else None),
            model=origin[0] if origin else None,
            kwargs=origin[1] if origin else {},
            task_options=task_options,
            classes=classes,
            transforms=[name for t in self.transforms for name in getattr(t, "structure", ())],
        )

    def _monitor(self) -> tuple[str, str]:
        monitor = self.config.trainer.monitor or f"val/{self.task.headline}"
        if monitor.removeprefix("val/") == self.task.headline:
            return monitor, self.task.mode
        return monitor, "min" if "loss" in monitor else "max"

    def _loader(self, data: Data, *, train: bool) -> Iterable[Any]:
        cfg = self.config
        parallel = self.parallel if train else None  # every rank validates on the whole split
        if isinstance(data, DataLoader):  # the user's own loader, used as is (resume then skips batches)
            if parallel is None:
                return data
            return shard_loader(data, rank=parallel.rank, world_size=parallel.world_size)
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
            rank=parallel.rank if parallel is not None else 0,
            world_size=parallel.world_size if parallel is not None else 1,
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
        """Like :meth:`validate`; also logs ``test/*`` metrics (and, for a Python run, the test data)
        into the run when there is one."""
        metrics = self.validate(data)
        if self.run is not None:
            if self.record_data:
                record_split(self.run, "test", data)
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


def _class_names(train_data: Data, target: torch.Tensor) -> list[str] | None:
    """Class names of a Python run's classification data: the dataset's own, else ``0 .. K-1`` with K
    from the targets (all of them when they are tensors; the first batch's otherwise)."""
    data = train_data.dataset if isinstance(train_data, DataLoader) else train_data
    names = getattr(data, "classes", None)
    if isinstance(names, list | tuple) and names:
        return [str(c) for c in names]
    if isinstance(data, TensorDataset) and len(data.tensors) == 2:
        target = data.tensors[1]
    elif isinstance(data, ArrayData):
        target = data.y
    elif isinstance(data, tuple) and len(data) == 2 and isinstance(data[1], torch.Tensor):
        target = data[1]
    if target.is_floating_point() and target.ndim == 2:  # soft labels: one column a class
        return [str(i) for i in range(target.shape[1])]
    if target.is_floating_point() or not target.numel():
        return None
    return [str(i) for i in range(int(target.max()) + 1)]


def flatten_params(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten_params(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
