"""TensorBoard and MLflow loggers, read back with the real libraries."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from ember.config import ConfigError
from ember.train import Trainer


def _fit(toy_data: tuple[torch.Tensor, torch.Tensor], **options: object):  # type: ignore[no-untyped-def]
    x, y = toy_data
    torch.manual_seed(0)
    trainer = Trainer(nn.Linear(8, 3), lr=0.05, epochs=3, batch_size=32, log_every=1, **options)
    return trainer.fit((x, y), (x, y))


def test_tensorboard_event_files_hold_every_metric(toy_data: tuple[torch.Tensor, torch.Tensor]) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = _fit(toy_data, loggers=["tensorboard"])
    events = EventAccumulator(str(result.run_dir / "tensorboard"))
    events.Reload()
    assert {"train/loss", "lr", "val/accuracy", "val/loss"} <= set(events.Tags()["scalars"])
    val = events.Scalars("val/accuracy")
    assert [e.step for e in val] == [h["step"] for h in result.history]
    assert [e.value for e in val] == pytest.approx([h["val/accuracy"] for h in result.history])
    assert len(events.Scalars("train/loss")) == result.steps  # log_every=1: one per step
    assert "config/text_summary" in events.Tags()["tensors"]


def test_mlflow_run_has_params_metrics_and_the_model(
    toy_data: tuple[torch.Tensor, torch.Tensor], tmp_path: Path
) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = _fit(toy_data, loggers=["mlflow"], mlflow_uri=uri, name="toy")
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("toy")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["ember.run"] == result.run_id
    assert run.data.params["optim.lr"] == "0.05" and run.data.params["trainer.epochs"] == "3"
    history = client.get_metric_history(run.info.run_id, "val/accuracy")
    assert [m.step for m in history] == [h["step"] for h in result.history]
    assert [m.value for m in history] == pytest.approx([h["val/accuracy"] for h in result.history])
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == result.steps
    local = client.download_artifacts(run.info.run_id, "model/model.safetensors", str(tmp_path))
    mine = load_file(result.run_dir / "model.safetensors")
    theirs = load_file(local)
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_an_unknown_logger_is_a_config_error(toy_data: tuple[torch.Tensor, torch.Tensor]) -> None:
    with pytest.raises(ConfigError, match="unknown logger 'tensorbord'; did you mean 'tensorboard'"):
        _fit(toy_data, loggers=["tensorbord"])
