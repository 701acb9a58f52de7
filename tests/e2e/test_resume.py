"""Exact mid-epoch resume: a run killed by SIGKILL, resumed, ends bit-identical to an uninterrupted one."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ember.track import RunStore
from ember.train.checkpoint import step_checkpoints

ROOT = Path(__file__).resolve().parents[2]
# 1257 training examples / 64 = 20 batches an epoch; a checkpoint every 7 steps lands mid-epoch.
RESUME = [
    "trainer.epochs=4",
    "trainer.deterministic=true",
    "trainer.checkpoint_every=7",
    "trainer.keep_last=1",
]
ARGS = ["configs/digits-cnn.yaml", *RESUME, "data.augment=[crop, cutout]", "model.dropout=0.2"]
# a GAN steps two networks through one optimizer, draws latents, keeps an average and spectral-norm
# vectors: all of it must come back
GAN = ["configs/fashion-dcgan.yaml", *RESUME, "data.name=digits", "model.name=dcgan_tiny", "model.width=4"]
GAN += ["model.latent_dim=8", "model.ema_decay=0.9"]


@pytest.mark.parametrize("args", [ARGS, GAN], ids=["cnn", "gan"])
def test_sigkill_then_resume_matches_uninterrupted(cli, tmp_path: Path, args: list[str]) -> None:  # type: ignore[no-untyped-def]
    runs = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ember", "train", *args, "--runs-dir", str(runs)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        found = [s for folder in runs.glob("*/checkpoints") for s, _ in step_checkpoints(folder)]
        if any(s % 20 for s in found):  # a mid-epoch checkpoint exists
            proc.send_signal(signal.SIGKILL)
            killed_at = max(found)
            break
        time.sleep(0.005)
    proc.wait()
    assert killed_at is not None, "the run finished before it could be killed"
    assert proc.returncode == -signal.SIGKILL
    run_id = RunStore(runs).list()[0].id
    assert RunStore(runs).get(run_id).status == "crashed"  # it never got to say anything: its pid tells
    assert not (runs / run_id / "model.safetensors").exists()

    cli("train", *args, "--runs-dir", str(runs), "--resume", run_id)
    assert RunStore(runs).get(run_id).status == "completed"
    out = cli("train", *args, "--runs-dir", str(runs)).stdout
    straight = out.strip().splitlines()[-1].split()[1]

    resumed = load_file(runs / run_id / "model.safetensors")
    uninterrupted = load_file(runs / straight / "model.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    for key in resumed:
        assert torch.equal(resumed[key], uninterrupted[key]), key


def test_resume_with_a_changed_config_is_refused(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    runs = str(tmp_path / "runs")
    out = cli(
        "train", "configs/digits-cnn.yaml", "trainer.epochs=1", "model.name=cnn_tiny", "--runs-dir", runs
    ).stdout
    run_id = out.strip().splitlines()[-1].split()[1]
    proc = cli(
        "train",
        "configs/digits-cnn.yaml",
        "trainer.epochs=2",
        "model.name=cnn_tiny",
        "--runs-dir",
        runs,
        "--resume",
        run_id,
        check=False,
    )
    assert proc.returncode == 2
    assert "trainer.epochs: 1 -> 2" in proc.stderr
