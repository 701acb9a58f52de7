"""Training as several processes under torchrun, each a real process on gloo.

The digits recipe with the same global batch gives the same parameters in 1 process, in 2
torchrun "nodes" of one process each (DDP, c10d rendezvous on loopback) and in 2 processes under
FSDP2; sharded checkpoints load across world sizes with equal state dicts. A GPT fitted through the
Python API (`distributed_fit.py`) stops early and ends with its best epoch's weights under FSDP2 and
DDP, and activation checkpointing under FSDP2 changes neither its losses nor its weights.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

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


@pytest.fixture(scope="module")
def fitted(runs: Path) -> dict[str, dict[str, Any]]:
    """`distributed_fit.py`'s variants: three in one 2-rank job, one in a single process."""
    helper = str(Path(__file__).with_name("distributed_fit.py"))
    jobs = [
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            helper,
            str(runs),
        ]
        + ["strategy=fsdp", "strategy=fsdp,activation_checkpointing=true", "strategy=ddp"],
        [sys.executable, helper, str(runs), ""],
    ]
    lines = []
    for command in jobs:
        proc = subprocess.run(command, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        lines += [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return {line["variant"]: line for line in lines}


def validations(runs: Path, run_id: str) -> list[dict[str, Any]]:
    """The run's logged validation rows, one per epoch."""
    rows = [json.loads(line) for line in (runs / run_id / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if "val/loss" in row]


def checkpointed_model(runs: Path, run_id: str, step: int) -> dict[str, torch.Tensor]:
    """The model's weights in the run's checkpoint of ``step``: a file, or a sharded folder read whole."""
    folder = runs / run_id / "checkpoints"
    sharded = folder / f"step-{step:06d}.dcp"
    if not sharded.exists():
        tensors = load_file(folder / f"step-{step:06d}.safetensors")
        return {k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")}
    import torch.distributed.checkpoint as dcp

    model = {k: torch.empty_like(v) for k, v in weights(runs, run_id).items()}
    with warnings.catch_warnings():  # read in this process, outside any process group: on purpose
        warnings.filterwarnings("ignore", "torch.distributed is disabled", UserWarning)
        dcp.load({"model": model}, checkpoint_id=str(sharded), no_dist=True)
    return model


@pytest.mark.parametrize("strategy", ["fsdp", "ddp"])
def test_early_stopping_ends_with_the_best_epoch(
    runs: Path, fitted: dict[str, dict[str, Any]], strategy: str
) -> None:
    run_id = fitted[f"strategy={strategy}"]["run_id"]
    rows = validations(runs, run_id)
    assert [row["epoch"] for row in rows] == [1, 2, 3]  # stopped after the worse third epoch, of 6
    assert rows[1]["val/loss"] < min(rows[0]["val/loss"], rows[2]["val/loss"])
    summary = RunStore(runs).get(run_id).summary
    assert summary["steps"] == 12
    assert "restored the weights of epoch 2" in summary["stop_reason"]
    assert {k: summary[k] for k in rows[1] if k.startswith("val/")} == {
        k: v for k, v in rows[1].items() if k.startswith("val/")
    }  # the run's metrics are the best epoch's
    final = weights(runs, run_id)
    best = checkpointed_model(runs, run_id, 8)
    assert all(torch.equal(final[k], best[k]) for k in final)
    assert max_difference(final, checkpointed_model(runs, run_id, 12)) > 1e-3  # the last epoch's are gone
    tolerance = {"fsdp": 1e-5, "ddp": 1e-6}[strategy]  # what a sharded and a replicated job match
    assert max_difference(final, weights(runs, fitted[""]["run_id"])) < tolerance  # as one process ends


def test_activation_checkpointing_composes_with_fsdp(runs: Path, fitted: dict[str, dict[str, Any]]) -> None:
    plain, checkpointed = fitted["strategy=fsdp"], fitted["strategy=fsdp,activation_checkpointing=true"]
    assert (plain["sharded"], plain["checkpointed"]) == (plain["blocks"], 0)
    assert (checkpointed["sharded"], checkpointed["checkpointed"]) == (2, 2)  # each block both
    for a, b in zip(
        validations(runs, plain["run_id"]), validations(runs, checkpointed["run_id"]), strict=True
    ):
        assert a["val/loss"] == pytest.approx(b["val/loss"], rel=1e-6)
    for step in (8, 12):  # the weights restored at the end, and the last epoch's
        a, b = (checkpointed_model(runs, run["run_id"], step) for run in (plain, checkpointed))
        assert max_difference(a, b) < 1e-6
    assert max_difference(weights(runs, plain["run_id"]), weights(runs, checkpointed["run_id"])) < 1e-6


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
