"""Fault suite, processes: one run killed again and again (SIGKILL or SIGTERM, at seeded random
moments, many of them while a checkpoint is being written), resumed after each kill, then finished.

After every kill: the run says how it ended (``crashed`` for SIGKILL, ``interrupted`` and exit 143
for SIGTERM, never ``running``), no traceback was printed, every checkpoint on disk loads (writes
are atomic), and the best checkpoint the newest one names still exists. At the end: the resumed
run completes, no ``.tmp-PID`` file is left, and its weights verify. The tallies are printed
(``-s``) and recorded in the README's RELIABILITY section.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from ember.recipe import load_run_model
from ember.track import RunStore
from ember.train.checkpoint import latest_checkpoint, load_checkpoint, step_checkpoints

pytestmark = [pytest.mark.slow, pytest.mark.faults]

ROOT = Path(__file__).resolve().parents[2]
KILLS = 8
# a wide MLP on digits: ~13 MB checkpoints every 2 steps, so writes fill much of the run's time
ARGS = [
    "configs/digits-cnn.yaml",
    "model.name=mlp",
    "model.width=1024",
    "model.depth=2",
    "trainer.epochs=2",
    "trainer.checkpoint_every=2",
    "trainer.checkpoint_min_interval=0",
    "trainer.keep_last=2",
]


def _start(runs: Path, resume: str | None) -> subprocess.Popen[str]:
    extra = ["--resume", resume] if resume else []
    return subprocess.Popen(
        [sys.executable, "-m", "ember", "train", *ARGS, "--runs-dir", str(runs), *extra],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _trained_by(runs: Path, pid: int) -> bool:
    """The run's record (run.json, not the database: polling it would contend for its lock) names
    ``pid``, and it has a checkpoint."""
    for record in runs.glob("*/run.json"):
        try:
            if json.loads(record.read_text()).get("pid") == pid:
                return bool(step_checkpoints(record.parent / "checkpoints"))
        except ValueError:  # being replaced right now
            continue
    return False


def _writing(folder: Path) -> bool:
    return any(".tmp-" in p.name for p in folder.iterdir()) if folder.is_dir() else False


def test_kills_during_training_and_checkpoint_writes_leave_a_resumable_run(tmp_path: Path) -> None:
    rng = random.Random(13)
    runs = tmp_path / "runs"
    tally: Counter[str] = Counter()
    problems: list[str] = []
    run_id: str | None = None
    for trial in range(KILLS):
        sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
        during_write = rng.random() < 0.5  # else at a random moment of training
        proc = _start(runs, run_id)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:  # until this process trains the run
            if _trained_by(runs, proc.pid):
                break
            time.sleep(0.01)
        folder = next(runs.glob("*/checkpoints"))
        if during_write:  # a checkpoint's temporary file is being written now
            wait_until = time.time() + 10
            while proc.poll() is None and not _writing(folder) and time.time() < wait_until:
                time.sleep(0.0005)
        else:
            time.sleep(rng.uniform(0.0, 1.0))
        mid_write = _writing(folder)
        if proc.poll() is None:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        run_id = run_id or RunStore(runs).list()[0].id
        status = RunStore(runs).get(run_id).status
        name = signal.Signals(sig).name
        tally[f"{name}{' mid-write' if mid_write else ''}"] += 1
        expected = {signal.SIGKILL: ("crashed", -9), signal.SIGTERM: ("interrupted", 143)}[sig]
        if status == "completed":
            tally["finished before the signal"] += 1
            break
        if (status, proc.returncode) != expected:
            problems.append(f"trial {trial} {name}: status {status}, exit {proc.returncode}")
        if "Traceback" in err:
            problems.append(f"trial {trial} {name}: traceback\n{err[-2000:]}")
        checkpoints = runs / run_id / "checkpoints"
        for _, path in step_checkpoints(checkpoints):
            load_checkpoint(path)  # atomic writes: every file there is whole
        newest = latest_checkpoint(checkpoints)
        best = newest.meta["position"].get("best_step") if newest else None
        if best is not None and not (checkpoints / f"step-{best:06d}.safetensors").exists():
            problems.append(f"trial {trial} {name}: the best checkpoint (step {best}) is gone")
    final = _start(runs, run_id)
    _, err = final.communicate(timeout=300)
    assert final.returncode == 0, err[-3000:]
    assert run_id is not None and RunStore(runs).get(run_id).status == "completed"
    leftovers = [p.name for p in (runs / run_id).rglob("*") if ".tmp-" in p.name]
    load_run_model(run_id, runs_dir=runs)  # the final weights verify against the store
    print(f"\nprocess faults: {KILLS} kills planned, {dict(tally)}; problems: {len(problems)}")
    assert not problems, "\n".join(problems)
    assert not leftovers, leftovers
