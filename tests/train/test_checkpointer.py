"""CheckpointManager and RunLogger through kills and resumes: finite states only, the best kept,
orphans removed, metrics committed while training and before every checkpoint."""

import math
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from ember.track import RunStore
from ember.train import NonFiniteLossError, Trainer
from ember.train import checkpoint as ck
from ember.train.checkpointer import CheckpointManager
from ember.train.precision import resolve_precision
from ember.train.run_logger import CommitFirst, RunLogger
from ember.train.state import TrainState


def _bn_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))


def test_a_nonfinite_buffer_stops_training_and_every_kept_checkpoint_is_finite(
    toy_data: tuple[torch.Tensor, torch.Tensor],
) -> None:
    x, y = toy_data

    class PoisonBatchNorm:  # what lr=1e6 does to a BatchNorm: running_var overflows, the loss may not
        def on_step_end(self, state: TrainState) -> None:
            if state.step == 4:
                state.model[1].running_var.fill_(math.inf)

    trainer = Trainer(
        _bn_model(),
        lr=0.01,
        epochs=3,
        batch_size=16,
        checkpoint_every=1,
        checkpoint_min_interval=0,
        keep_last=2,
        callbacks=[PoisonBatchNorm()],
    )
    with pytest.raises(NonFiniteLossError, match=r"non-finite.*1\.running_var"):
        trainer.fit((x, y))
    assert trainer.run is not None
    assert RunStore().get(trainer.run.id).status == "failed"
    kept = ck.step_checkpoints(trainer.run.dir / "checkpoints")
    assert [s for s, _ in kept] == [2, 3]  # retention never pruned the last finite ones
    for _, path in kept:
        state = ck.load_checkpoint(path)
        assert not ck.nonfinite(state.model) and not ck.nonfinite(state.tensors), path.name


def _state(step: int, metric: float | None, monitor: str = "val/accuracy") -> TrainState:
    model = nn.Linear(2, 2)
    state = TrainState(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        precision=resolve_precision("fp32", torch.device("cpu")),
        device=torch.device("cpu"),
        epochs=10,
        total_steps=10,
        steps_per_epoch=1,
    )
    state.step = step
    if metric is not None:
        state.metrics[monitor] = metric
    return state


def test_the_best_checkpoint_survives_kills_and_resumes(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"

    def manager(resumed_from: Path | None) -> CheckpointManager:
        return CheckpointManager(
            folder, keep_last=1, monitor="val/accuracy", mode="max", resumed_from=resumed_from
        )

    first = manager(None)
    state = _state(1, 0.9)
    first.save(state, reason="epoch")  # the best
    state.step, state.metrics["val/accuracy"] = 2, 0.5
    first.save(state, reason="epoch")
    # killed; a resume reads the newest checkpoint's position, which names the best
    for round_, steps in enumerate(((3, 4), (5, 6), (7,))):
        last = ck.latest_checkpoint(folder)
        assert last is not None
        resumed = _state(0, None)
        resumed.load_position(last.meta["position"])
        assert resumed.best_step == 1 and resumed.best == 0.9, round_
        again = manager(last.path)
        for step in steps:
            resumed.step, resumed.metrics["val/accuracy"] = step, 0.1
            again.save(resumed, reason="epoch")
    names = {p.name for _, p in ck.step_checkpoints(folder)}
    assert "step-000001.safetensors" in names and "step-000007.safetensors" in names
    newest = ck.latest_checkpoint(folder)
    assert newest is not None and newest.meta["position"]["best_step"] == 1


def test_writes_a_kill_interrupted_are_cleaned_at_the_runs_next_start(
    toy_data: tuple[torch.Tensor, torch.Tensor],
) -> None:
    x, y = toy_data
    trainer = Trainer(_bn_model(), lr=0.01, epochs=1, batch_size=16, checkpoint_min_interval=0)
    trainer.fit((x, y))
    assert trainer.run is not None
    run_dir = trainer.run.dir
    dead = 2**22 + 12345  # above pid_max's default: no process has it
    orphans = [
        run_dir / "checkpoints" / f".step-000009.safetensors.tmp-{dead}",
        run_dir / f".model.safetensors.tmp-{dead}",
    ]
    for path in orphans:
        path.write_bytes(b"\0" * 1000)
    again = Trainer(_bn_model(), lr=0.01, epochs=1, batch_size=16, checkpoint_min_interval=0)
    again.fit((x, y), resume=trainer.run.id)
    assert not any(p.exists() for p in orphans)


def test_training_metrics_are_committed_while_an_epoch_runs(
    toy_data: tuple[torch.Tensor, torch.Tensor],
) -> None:
    x, y = toy_data
    seen: list[int] = []

    class Slow:  # ~0.25 s a step; 1.6 s after the first, look at what the store holds
        def __init__(self) -> None:
            self.start: float | None = None

        def on_step_end(self, state: TrainState) -> None:
            time.sleep(0.25)
            self.start = self.start or time.perf_counter()
            if not seen and time.perf_counter() - self.start > 1.6:
                run_id = RunStore().list()[0].id
                deadline = time.perf_counter() + 5.0  # the commit runs on the writer's thread
                while not seen and time.perf_counter() < deadline:
                    rows = RunStore().metrics(run_id, "train/loss")
                    if rows:
                        seen.append(len(rows))
                    time.sleep(0.05)
                state.should_stop = True

    trainer = Trainer(_bn_model(), lr=0.01, epochs=1, batch_size=4, log_every=1, callbacks=[Slow()])
    trainer.fit((x, y))
    assert seen and seen[0] >= 2  # steps of the epoch in progress, before it ended


@pytest.mark.parametrize("ordered", [True, False], ids=["on-the-writer", "on-the-training-thread"])
def test_a_checkpoint_is_written_after_every_metric_logged_before_it(tmp_path: Path, ordered: bool) -> None:
    """A job killed just after the checkpoint of step 7 resumes from step 8: the loss logged at 7 has
    to be in the store by then, however short the time since the last commit."""
    store = RunStore(tmp_path)
    run = store.create("demo", config_yaml="name: demo\n", params={})
    writer = ck.BackgroundWriter()
    logger = RunLogger(run, writer, every_s=3600.0)  # on its own, no commit during this test
    in_store: list[list[int]] = []

    def look() -> None:  # what the store holds when the checkpoint is written
        in_store.append(sorted({step for step, *_ in store.metrics(run.id, "train/loss")}))

    class Inner:
        def save(self, state: Any, *, reason: str) -> None:
            if ordered:
                writer.submit(look)  # like CheckpointManager's write
            else:
                look()  # like FSDP's shards

    checkpointer = CommitFirst(Inner(), logger, ordered=ordered)
    state = SimpleNamespace(step=0, epoch=0)
    for step in (7, 14):
        state.step = step
        logger.on_log(state, {"train/loss": 1.0 / step})  # type: ignore[arg-type]
        checkpointer.save(state, reason="step")  # type: ignore[arg-type]
    writer.close()
    assert in_store == [[7], [7, 14]]
