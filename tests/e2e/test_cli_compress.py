"""``ember compress`` and ``ember plan`` on a real (tiny) run, through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import ember

FAST = ["--threads", "1", "--rounds", "2", "--round-s", "0.01"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(run store, run id): one tiny run shared by the tests of this file."""
    runs = tmp_path_factory.mktemp("runs")
    root = Path(__file__).resolve().parents[2]
    result = ember.fit(
        root / "configs/digits-cnn.yaml",
        {"trainer.epochs": 2, "model.name": "cnn_tiny"},
        runs_dir=runs,
        progress=False,
    )
    return runs, result.run_id


def test_plan_writes_the_serving_plan(cli, trained: tuple[Path, str]) -> None:  # type: ignore[no-untyped-def]
    store, run_id = trained
    where = ["--runs-dir", str(store)]
    backends = ["--backends", "eager,int8-dynamic", "--batch-sizes", "1,8"]
    out = cli("plan", run_id, *where, *backends, "--p99-ms", "1000", *FAST)
    assert "plan: " in out.stdout and "int8-dynamic" in out.stdout
    plan = json.loads((store / run_id / "plan.json").read_text())
    assert plan["backend"] in ("eager", "int8-dynamic") and plan["threads"] == 1
    assert plan["max_batch"] in (1, 8) and plan["p99_ms"] + plan["max_wait_ms"] <= 1000
    assert {m["backend"] for m in plan["measurements"]} >= {"eager"}
    assert "accuracy" in plan["quality"]["eager"]  # checked on the run's labelled test split

    impossible = cli(
        "plan", run_id, *where, "--backends", "eager", "--p99-ms", "0.000001", *FAST, check=False
    )
    assert impossible.returncode == 2 and "no configuration meets the budget" in impossible.stderr


def test_compress_prints_the_measured_pareto_table(cli, trained: tuple[Path, str]) -> None:  # type: ignore[no-untyped-def]
    store, run_id = trained
    out = cli("compress", run_id, "--runs-dir", str(store), "--try", "prune", "--epochs", "1", *FAST)
    for name in ("fp32", "prune-magnitude-50", "prune-channels-50"):
        assert name in out.stdout
    assert "p50@1 ms" in out.stdout and "p99@64" in out.stdout and "Pareto" in out.stdout
    report = json.loads((store / run_id / "compress.json").read_text())
    variants = {v["variant"]: v for v in report["variants"]}
    assert variants["prune-channels-50"]["size_bytes"] < variants["fp32"]["size_bytes"]
    for v in variants.values():  # "better" only when faster at batch 1 and 64
        if v["verdict"].startswith("better"):
            assert all(lat["ratio"] <= 0.95 for lat in v["latency"].values())

    bad = cli("compress", run_id, "--runs-dir", str(store), "--try", "quantum", check=False)
    assert bad.returncode == 2 and "unknown technique" in bad.stderr
    bad = cli("compress", run_id, "--runs-dir", str(store), "--limit", "0", check=False)
    assert (
        bad.returncode == 2 and "--limit must be a positive" in bad.stderr and "Traceback" not in bad.stderr
    )
