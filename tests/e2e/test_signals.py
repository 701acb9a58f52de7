"""SIGTERM ends a training run as `interrupted` after a final checkpoint, exit 143; resume finishes it."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ember.track import RunStore
from ember.train.checkpoint import latest_checkpoint, step_checkpoints

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["configs/digits-cnn.yaml", "trainer.epochs=3", "model.name=cnn_tiny", "trainer.checkpoint_every=3"]


def test_sigterm_writes_a_final_checkpoint_and_marks_the_run_interrupted(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    runs = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ember", "train", *ARGS, "--runs-dir", str(runs)],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if any(step_checkpoints(folder) for folder in runs.glob("*/checkpoints")):
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.01)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err  # 128 + SIGTERM, as a shell reports a signal death
    assert "interrupted" in err and "Traceback" not in err
    record = RunStore(runs).list()[0]
    assert record.status == "interrupted" and "SIGTERM" in (record.error or "")
    last = latest_checkpoint(record.folder / "checkpoints")
    assert last is not None and last.meta["reason"] == "final"
    assert not (record.folder / "model.safetensors").exists()

    cli("train", *ARGS, "--runs-dir", str(runs), "--resume", record.id)
    assert RunStore(runs).get(record.id).status == "completed"
