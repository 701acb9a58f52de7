"""Training as several processes under torchrun, each a real process on gloo.

The digits recipe with the same global batch gives the same parameters in 1 process, in 2
torchrun "nodes" of one process each (DDP, c10d rendezvous on loopback) and in 2 processes under
FSDP2; sharded checkpoints load across world sizes with equal state dicts.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ember.track import RunStore

ROOT = Path(__file__).resolve().parents[2]
# 1257 training examples: 20 micro-batches of 64 an epoch, the last one 41 (split 21 + 20 over two
# ranks: the uneven-shard weighting), two micro-batches a step (no_sync on the first).
ARGS = [
    "configs/digits-cnn.yaml",
    "trainer.epochs=2",
    "trainer.accumulate=2",
    "model.name=cnn_tiny",
    "model.norm=group",  # BatchNorm normalizes over a rank's shard on CPU (no SyncBatchNorm there)
    "trainer.deterministic=true",
]
pytestmark = pytest.mark.slow


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def train(runs: Path, *extra: str) -> str:
    """``ember train`` with ARGS; the run id it prints."""
    proc = subprocess.run(
        [sys.executable, "-m", "ember", "train", *ARGS, *extra, "--runs-dir", str(runs), "--no-progress"],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return run_id(proc.stdout)


def run_id(stdout: str) -> str:
    """The id in the ``run <id> <folder>`` line ``ember train`` ends with."""
    found = re.findall(r"^run (\S+) ", stdout, flags=re.MULTILINE)
    assert len(found) == 1, stdout
    return str(found[0])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def weights(runs: Path, run_id: str, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    return load_file(runs / run_id / name)


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def single(runs: Path) -> str:
    return train(runs)


@pytest.fixture(scope="module")
def sharded(runs: Path) -> str:
    return train(runs, "trainer.strategy=fsdp", "--nproc=2")


def test_two_nodes_on_loopback_match_one_process(runs: Path, single: str) -> None:
    port = free_port()
    nodes = [
        subprocess.Popen(
            [
                *[sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(rank)],
                *["--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}"],
                *["--rdzv-id", "two-nodes", "--rdzv-conf", f"is_host={rank == 0}"],
                *["-m", "ember", "train", *ARGS, "--runs-dir", str(runs), "--no-progress"],
            ],
            cwd=ROOT,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # two launchers, as on two machines
        )
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(outputs)
    two = run_id(outputs[0])
    record = RunStore(runs).get(two)
    assert record.environment["distributed"] == {"world_size": 2, "nodes": 2}
    assert "trained" not in outputs[1]  # rank 1 wrote and printed nothing of its own
    assert max_difference(weights(runs, two), weights(runs, single)) < 1e-6
    assert RunStore(runs).get(single).summary["steps"] == record.summary["steps"] == 20


def test_fsdp_matches_one_process(runs: Path, single: str, sharded: str) -> None:
    assert max_difference(weights(runs, sharded), weights(runs, single)) < 1e-5
    folder = runs / sharded / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["step-000010.dcp", "step-000020.dcp"]
    assert {p.name for p in (folder / "step-000020.dcp").iterdir()} >= {"__0_0.distcp", "__1_0.distcp"}


def test_fsdp_checkpoints_load_across_world_sizes(runs: Path, sharded: str, tmp_path: Path) -> None:
    two_rank = runs / sharded / "checkpoints" / "step-000020.dcp"
    helper = str(Path(__file__).with_name("fsdp_states.py"))
    saved_by_one = tmp_path / "one"
    subprocess.run(
        [
            sys.executable,
            helper,
            f"{two_rank}={tmp_path / 'at1.safetensors'}",
            "--save-to",
            str(saved_by_one),
        ],
        cwd=ROOT,
        env=env(),
        check=True,
        timeout=600,
    )
    subprocess.run(
        [
            *[sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", helper],
            f"{two_rank}={tmp_path / 'at2.safetensors'}",
            f"{saved_by_one / 'step-000020.dcp'}={tmp_path / 'one_at2.safetensors'}",
        ],
        cwd=ROOT,
        env=env(),
        check=True,
        timeout=600,
    )
    at1, at2, one_at2 = (load_file(tmp_path / f"{n}.safetensors") for n in ("at1", "at2", "one_at2"))
    assert any(k.endswith("/exp_avg") for k in at1)  # the optimizer's moments came through
    assert all(at1[k].abs().sum() > 0 for k in at1 if k.endswith("/exp_avg"))
    for other in (at2, one_at2):  # 2 -> 1 as 2 -> 2, and 1 -> 2
        assert other.keys() == at1.keys()
        for key in at1:
            assert torch.equal(other[key], at1[key]), key
    final = weights(runs, sharded)  # the last checkpoint's model is the run's final weights
    assert all(torch.equal(at1[f"model/{k}"], v) for k, v in final.items())
