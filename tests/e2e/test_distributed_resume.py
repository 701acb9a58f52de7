"""A 2-process job killed mid-epoch ends bit-identical to an uninterrupted one: resumed by hand
after SIGKILL of the whole job, or restarted by torchrun (``--max-restarts``) after SIGKILL of one
rank, within the same run. SIGTERM stops both ranks after the same step with a final checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ember.track import RunStore
from ember.train.checkpoint import step_checkpoints

ROOT = Path(__file__).resolve().parents[2]
# 1257 examples / 64 = 20 global batches an epoch; a checkpoint every 7 steps lands mid-epoch.
# Augmentation, dropout and the moving average all have to come back exactly.
ARGS = [
    "configs/digits-cnn.yaml",
    "trainer.epochs=3",
    "model.name=cnn_tiny",
    "model.dropout=0.2",
    "data.augment=[crop, cutout]",
    "trainer.ema=0.9",
    "trainer.deterministic=true",
    "trainer.checkpoint_every=7",
    "trainer.keep_last=1",
]
pytestmark = pytest.mark.slow


def start(runs: Path, mark: str, *options: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ember", "train", *ARGS, "--runs-dir", str(runs), "--no-progress", *options],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "EMBER_TEST_MARK": mark},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def marked(mark: str, *needles: str) -> list[int]:
    """Pids of this test's processes (launcher, torchrun, workers) whose environment has ``needles``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if all(f"{k}".encode() in environ for k in (f"EMBER_TEST_MARK={mark}", *needles)):
            found.append(int(proc.name))
    return found


def kill_mid_epoch(runs: Path, proc: subprocess.Popen[str], mark: str, *needles: str) -> int:
    """SIGKILL the processes matching ``needles`` once a mid-epoch checkpoint exists; its step."""
    deadline = time.time() + 500
    while time.time() < deadline and proc.poll() is None:
        found = [s for folder in runs.glob("*/checkpoints") for s, _ in step_checkpoints(folder)]
        victims = marked(mark, *needles)
        if any(s % 20 for s in found) and victims:
            for pid in victims:
                os.kill(pid, signal.SIGKILL)
            return max(found)
        time.sleep(0.005)
    raise AssertionError("the job ended before it could be killed:\n" + (proc.communicate()[0] or ""))


def final(runs: Path, run_id: str) -> dict[str, torch.Tensor]:
    folder = runs / run_id
    model = load_file(folder / "model.safetensors")
    return model | {f"ema/{k}": v for k, v in load_file(folder / "ema.safetensors").items()}


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    runs = tmp_path_factory.mktemp("straight")
    out = start(runs, uuid.uuid4().hex, "--nproc", "2").communicate(timeout=600)[0]
    records = RunStore(runs).list()
    assert len(records) == 1 and records[0].status == "completed", out
    record = records[0]
    return final(runs, record.id)


def test_kill_9_of_the_whole_job_then_resume_is_bit_identical(
    tmp_path: Path, uninterrupted: dict[str, torch.Tensor]
) -> None:
    runs, mark = tmp_path / "runs", uuid.uuid4().hex
    proc = start(runs, mark, "--nproc", "2")
    kill_mid_epoch(runs, proc, mark)  # the launcher, torchrun and both workers
    proc.communicate()
    (record,) = RunStore(runs).list()
    assert record.status == "running"  # nobody was left to say anything
    out = start(runs, uuid.uuid4().hex, "--nproc", "2", "--resume", record.id).communicate(timeout=600)[0]
    assert RunStore(runs).get(record.id).status == "completed", out
    assert_identical(final(runs, record.id), uninterrupted)


def test_a_rank_killed_under_max_restarts_continues_the_same_run(
    tmp_path: Path, uninterrupted: dict[str, torch.Tensor]
) -> None:
    runs, mark = tmp_path / "runs", uuid.uuid4().hex
    proc = start(runs, mark, "--nproc", "2", "--max-restarts", "1")
    killed_at = kill_mid_epoch(runs, proc, mark, "RANK=1", "TORCHELASTIC_RESTART_COUNT=0")
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out
    records = RunStore(runs).list()
    assert len(records) == 1, out  # the restarted workers found the job's run
    record = records[0]
    assert record.status == "completed" and record.summary["steps"] == 60
    logged = sorted({step for step, _, _, _ in RunStore(runs).metrics(record.id, "train/loss")})
    assert logged == sorted({*range(7, 61, 7), 20, 40, 50, 60}), killed_at  # every log step, no gap
    assert_identical(final(runs, record.id), uninterrupted)


def test_sigterm_stops_every_rank_after_one_step_then_the_run_resumes(tmp_path: Path) -> None:
    runs, mark = tmp_path / "runs", uuid.uuid4().hex
    proc = start(runs, mark, "--nproc", "2")
    deadline = time.time() + 500
    while not any(s for folder in runs.glob("*/checkpoints") for s, _ in step_checkpoints(folder)):
        assert time.time() < deadline and proc.poll() is None, proc.communicate()[0]
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)  # the launcher's: torchrun passes it to both workers
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 143, out
    (record,) = RunStore(runs).list()
    assert record.status == "interrupted", out  # every rank stopped, rank 0 said so
    stopped, path = step_checkpoints(runs / record.id / "checkpoints")[-1]
    assert 7 <= stopped < 60
    said = (
        f"ember train: interrupted: stopped by SIGTERM at optimizer step {stopped}; final checkpoint written"
    )
    assert out.count(said) == 2, out  # both ranks, after the same step
    assert json.loads(safe_open(str(path), "pt").metadata()["ember"])["reason"] == "final"
    out = start(runs, uuid.uuid4().hex, "--nproc", "2", "--resume", record.id).communicate(timeout=600)[0]
    record = RunStore(runs).get(record.id)
    assert record.status == "completed" and record.summary["steps"] == 60, out
    logged = {step for step, _, _, _ in RunStore(runs).metrics(record.id, "train/loss")}
    assert {*range(7, 61, 7), stopped, 60} <= logged
