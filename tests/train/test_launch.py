"""ember's torchrun launcher and what a torchrun job's processes find in their environment
(the jobs themselves run in tests/e2e/test_distributed*.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from ember.cli import main
from ember.config import Config
from ember.track import RunStore
from ember.train import distributed
from ember.train.launch import launcher_environment, torchrun_command
from ember.train.trainer import new_run


def test_the_launcher_runs_torchrun_with_a_fresh_store_per_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    command = torchrun_command(
        ["train", "configs/digits-cnn.yaml", "trainer.epochs=1"], nproc=3, max_restarts=2
    )
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert command[command.index("--nproc-per-node") + 1] == "3"
    assert command[command.index("--max-restarts") + 1] == "2"
    assert command[-5:] == ["-m", "ember", "train", "configs/digits-cnn.yaml", "trainer.epochs=1"]
    monkeypatch.delenv("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    env = launcher_environment(2)
    assert env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] == "1" and int(env["OMP_NUM_THREADS"]) >= 1
    monkeypatch.setenv("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "0")  # the user's own choice stands
    assert launcher_environment(2)["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] == "0"


def test_one_process_stays_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.setup("auto", torch.device("cpu")) is None
    assert distributed.setup("ddp", torch.device("cpu")) is None
    assert distributed.environment() == {} and distributed.is_main_process()


def test_restarted_workers_find_their_jobs_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-a")
    monkeypatch.setenv("WORLD_SIZE", "2")
    first = new_run(store, Config(name="a"), "fp32")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-b")
    new_run(store, Config(name="b"), "fp32")
    assert store.get(first.id).environment["distributed"] == {"world_size": 2, "nodes": 1}
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-a")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    assert distributed.restarted_run(store) is None  # a first start makes a new run
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert distributed.restarted_run(store) == first.id
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-c")
    assert distributed.restarted_run(store) is None  # died before making one: start one


def test_other_ranks_follow_rank_0s_run_without_writing(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    run = new_run(store, Config(name="a"), "fp32")
    follower = distributed.FollowerRun(store, run.id)
    follower.log({"train/loss": 1.0}, step=1)
    follower.flush()
    follower.update(best=0.5)
    follower.finish("completed")
    record = store.get(run.id)
    assert record.status == "running" and record.best is None and store.metrics(run.id) == []
    assert follower.dir == run.dir


def test_nproc_inside_a_torchrun_job_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", "configs/digits-cnn.yaml", "--nproc", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already one of a torchrun job" in err
