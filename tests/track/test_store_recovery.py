"""A lost or damaged ember.db is reported and rebuilt from the run folders; dead runs read as crashed."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from ember.cli import main
from ember.track import RunStore, RunStoreError
from ember.track.rebuild import rebuild
from ember.track.runs import STALE_S


def _store_with_runs(root: Path) -> tuple[RunStore, list[str]]:
    store = RunStore(root)
    ids = []
    for i, status in enumerate(("completed", "failed")):
        run = store.create(f"r{i}", config_yaml=f"name: r{i}\ntrainer:\n  epochs: {i + 1}\n")
        run.log({"train/loss": 1.0 / (i + 1)}, step=5, epoch=0)
        (run.dir / "model.safetensors").write_bytes(b"weights %d" % i)
        run.artifact(run.dir / "model.safetensors", "weights")
        run.update(best=0.5 + i, headline="val/accuracy")
        run.finish(status, summary={"steps": 5})
        ids.append(run.id)
    return store, ids


def test_a_deleted_index_is_reported_and_rebuilt_from_the_run_folders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "runs"
    store, ids = _store_with_runs(root)
    before = {run_id: (store.get(run_id), store.metrics(run_id), store.artifacts(run_id)) for run_id in ids}
    for suffix in ("", "-wal", "-shm"):
        (root / f"ember.db{suffix}").unlink(missing_ok=True)
    with pytest.raises(RunStoreError, match=r"ember\.db is missing.*2 run folders.*ember runs rebuild"):
        RunStore(root)
    assert main(["runs", "--runs-dir", str(root)]) == 2  # one line, no traceback
    assert "ember runs rebuild" in capsys.readouterr().err
    assert main(["runs", "rebuild", "--runs-dir", str(root)]) == 0
    assert "2 runs" in capsys.readouterr().out
    again = RunStore(root)
    for run_id, (record, metrics, artifacts) in before.items():
        now = again.get(run_id)
        assert (now.status, now.best, now.summary, now.config) == (
            record.status,
            record.best,
            record.summary,
            record.config,
        )
        assert again.metrics(run_id) == metrics and again.artifacts(run_id) == artifacts


def test_a_garbled_index_is_reported_and_rebuilt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "runs"
    store, ids = _store_with_runs(root)
    db = root / "ember.db"
    for suffix in ("-wal", "-shm"):
        (root / f"ember.db{suffix}").unlink(missing_ok=True)
    db.write_bytes(b"this is not a database" * 50)
    with pytest.raises(RunStoreError, match="is damaged.*ember runs rebuild"):
        RunStore(root).list()
    assert main(["runs", "show", "latest", "--runs-dir", str(root)]) == 2
    assert "damaged" in capsys.readouterr().err
    report = rebuild(root)
    assert report.runs == 2 and report.kept_damaged is not None and report.kept_damaged.exists()
    rebuilt = RunStore(root)
    assert {r.id for r in rebuilt.list()} == set(ids)
    assert rebuilt.get(ids[1]).status == "failed" and rebuilt.metrics(ids[0], "train/loss") == [
        (5, 0, "train/loss", 1.0)
    ]


def test_a_run_whose_process_died_reads_as_crashed(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    code = (
        "import os, sys; from ember.track import RunStore; "
        f"run = RunStore({str(root)!r}).create('doomed', config_yaml=''); print(run.id, flush=True); os._exit(9)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    run_id = out.stdout.split()[0]
    record = RunStore(root).get(run_id)
    assert record.status == "crashed" and record.pid is not None
    alive = RunStore(root).create("alive", config_yaml="")  # this process: still running
    assert RunStore(root).get(alive.id).status == "running"


def test_a_silent_heartbeat_from_another_host_reads_as_crashed(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    run = store.create("elsewhere", config_yaml="")
    run.update(host="another-host", pid=1, heartbeat=time.time())
    assert store.get(run.id).status == "running"
    run.update(heartbeat=time.time() - STALE_S - 1)
    assert store.get(run.id).status == "crashed"
