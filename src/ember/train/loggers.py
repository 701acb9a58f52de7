"""Loggers that mirror a run into the tools people watch training in: TensorBoard and MLflow.

Chosen in the config (``trainer.loggers: [tensorboard, mlflow]``) and added by the Trainer as
callbacks beside the run store, which always records the run. Each library is imported only when its
logger is chosen; a missing one fails before training with the ``pip install`` line.

- ``tensorboard``: event files in the run folder (``RUN/tensorboard``): every logged metric as a
  scalar by optimizer step, the config as text. ``tensorboard --logdir runs`` shows every run.
- ``mlflow``: a run in an MLflow tracking store (``trainer.mlflow_uri``; default
  ``$MLFLOW_TRACKING_URI``, else a SQLite store ``mlflow.db`` beside the runs) under the experiment
  named like the recipe: the flattened config as params, every metric by step, and at the end the
  model's weights (``model/model.safetensors``) and ``config.yaml`` as artifacts.

Example:
    >>> import tempfile, torch
    >>> from torch import nn
    >>> from ember.train import Trainer
    >>> trainer = Trainer(nn.Linear(4, 2), epochs=1, loggers=["tensorboard"], runs_dir=tempfile.mkdtemp())
    >>> result = trainer.fit((torch.randn(8, 4), torch.randint(0, 2, (8,))))  # doctest: +SKIP
    >>> sorted(p.name for p in (result.run_dir / "tensorboard").iterdir())[0][:20]  # doctest: +SKIP
    'events.out.tfevents.'
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ember._registry import Registry
from ember.config import Config, ConfigError, to_dict
from ember.train.state import TrainState

__all__ = ["MLflowLogger", "TensorBoardLogger", "build_loggers", "check_loggers", "loggers"]

loggers: Registry[Any] = Registry("logger")


def _require(module: str, package: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"trainer.loggers: {package} is not installed: pip install 'ember[loggers]'"
        ) from None


@loggers.register("tensorboard")
class TensorBoardLogger:
    """Writes every logged metric as a TensorBoard scalar (by optimizer step) into ``folder``."""

    def __init__(self, folder: Path, config: Config | None = None) -> None:
        _require("tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder))
        if config is not None:
            from ember.config import dump_yaml

            self.writer.add_text("config", "```\n" + dump_yaml(config) + "\n```", 0)

    def _scalars(self, state: TrainState, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            if math.isfinite(value):
                self.writer.add_scalar(key, value, state.step)

    def on_log(self, state: TrainState, metrics: dict[str, float]) -> None:
        self._scalars(state, metrics)

    def on_validation_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        self._scalars(state, metrics)
        self.writer.flush()

    def on_fit_end(self, state: TrainState) -> None:
        self.writer.close()


@loggers.register("mlflow")
class MLflowLogger:
    """Mirrors the run into an MLflow tracking store: params, metrics by step, the model as an artifact."""

    def __init__(
        self, uri: str, *, experiment: str, run_name: str, config: Config | None, folder: Path
    ) -> None:
        _require("mlflow", "mlflow")
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        self.run_id = self.client.create_run(
            experiment_id, run_name=run_name, tags={"ember.run": run_name}
        ).info.run_id
        self.folder = folder
        if config is not None:
            params = [Param(k, str(v)[:6000]) for k, v in _flatten(to_dict(config)).items()]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
                self.client.log_batch(self.run_id, params=params[i : i + 100])

    def _metrics(self, state: TrainState, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        rows = [Metric(k, float(v), now, state.step) for k, v in metrics.items() if math.isfinite(v)]
        if rows:
            self.client.log_batch(self.run_id, metrics=rows)

    def on_log(self, state: TrainState, metrics: dict[str, float]) -> None:
        self._metrics(state, metrics)

    def on_validation_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        self._metrics(state, metrics)

    def on_fit_end(self, state: TrainState) -> None:
        from safetensors.torch import save_file

        from ember.train.checkpoint import safetensors_ready

        with tempfile.TemporaryDirectory() as work:  # the final (best, with early stopping) weights
            weights = Path(work) / "model.safetensors"
            save_file(safetensors_ready(state.model.state_dict()), str(weights))
            self.client.log_artifact(self.run_id, str(weights), "model")
        if (self.folder / "config.yaml").is_file():
            self.client.log_artifact(self.run_id, str(self.folder / "config.yaml"))
        self.client.set_terminated(self.run_id, "FINISHED")


def check_loggers(names: Sequence[str]) -> None:
    """ConfigError for a name in ``trainer.loggers`` that is no logger (with the closest one)."""
    for name in names:
        if name not in loggers:
            try:
                loggers.get(name)
            except KeyError as e:
                raise ConfigError(
                    f"trainer.loggers: {e}".replace(
                        "See `ember list loggers`.", "Known: tensorboard, mlflow."
                    )
                ) from None


def build_loggers(config: Config, run_dir: Path, run_name: str) -> list[Any]:
    """The callbacks for ``config.trainer.loggers`` of the run in ``run_dir``."""
    names = config.trainer.loggers
    check_loggers(names)
    out: list[Any] = []
    for name in dict.fromkeys(names):
        if name == "tensorboard":
            out.append(TensorBoardLogger(run_dir / "tensorboard", config))
        else:
            uri = config.trainer.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI") or _default_uri(run_dir)
            experiment = config.name or "ember"
            out.append(
                MLflowLogger(uri, experiment=experiment, run_name=run_name, config=config, folder=run_dir)
            )
    return out


def _default_uri(run_dir: Path) -> str:
    return f"sqlite:///{(run_dir.parent / 'mlflow.db').resolve()}"


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
