import json
from pathlib import Path

import pytest

from ember.track import RunNotFoundError, RunStore, environment, source_version


def test_create_log_flush_finish(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    run = store.create("demo", config_yaml="name: demo\n", params={"optim.lr": 0.1}, seed=3)
    assert (run.dir / "config.yaml").read_text() == "name: demo\n"
    run.log({"train/loss": 1.0, "lr": 0.1}, step=1, epoch=0)
    assert store.metrics(run.id) == []  # buffered until flush
    run.log({"train/loss": 0.5}, step=2, epoch=0)
    run.flush()
    assert store.metrics(run.id, "train/loss") == [(1, 0, "train/loss", 1.0), (2, 0, "train/loss", 0.5)]
    lines = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["train/loss"] == 1.0 and lines[0]["lr"] == 0.1 and lines[1]["step"] == 2
    weights = run.dir / "model.safetensors"
    weights.write_bytes(b"abc")
    digest = run.artifact(weights, "weights")
    assert digest == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    run.update(best=0.9, headline="val/accuracy", data_sha256="d" * 64)
    run.finish("completed", summary={"val/accuracy": 0.9})
    record = store.get(run.id)
    assert record.status == "completed" and record.best == 0.9 and record.seed == 3
    assert record.summary == {"val/accuracy": 0.9} and record.duration_s is not None
    assert store.params(run.id) == {"optim.lr": 0.1}
    assert store.artifacts(run.id) == [("model.safetensors", "weights", digest, 3)]


def test_lookup_by_prefix_latest_and_errors(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    a = store.create("alpha", config_yaml="")
    b = store.create("beta", config_yaml="")
    assert store.get("latest").id == b.id
    assert store.get("latest:alpha").id == a.id
    assert store.get("alph").id == a.id
    assert [r.id for r in store.list()] == [b.id, a.id]
    with pytest.raises(RunNotFoundError, match="no run 'gamma'"):
        store.get("gamma")
    store.create("alpha", config_yaml="")
    with pytest.raises(RunNotFoundError, match="matches 2 runs"):
        store.get("alpha")


def test_reproducibility_records() -> None:
    env = environment()
    assert env["python"] and "torch" in env["packages"]
    src = source_version()
    assert len(src["source_sha256"]) == 64


def test_kept_open_keeps_the_write_ahead_log_between_transactions(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    wal = Path(f"{store.db_path}-wal")
    assert not wal.exists()  # the last connection closed: the log was folded in and deleted
    with store.kept_open():
        with store.kept_open():  # reentrant
            run = store.create("demo", config_yaml="")
        run.update(best=1.0)
        assert wal.exists()  # the idle connection keeps it: a transaction is only a log append
        assert store.get(run.id).best == 1.0
    assert not wal.exists() and store.get(run.id).best == 1.0


def test_one_record_writes_run_json_once_at_its_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ember.track import runs

    run = RunStore(tmp_path).create("demo", config_yaml="")
    writes: list[Path] = []
    write = runs.atomic_write_bytes
    monkeypatch.setattr(
        runs, "atomic_write_bytes", lambda path, data: (writes.append(path), write(path, data))
    )
    (run.dir / "w.bin").write_bytes(b"w")
    with run.one_record():
        run.update(best=0.5)
        run.artifact(run.dir / "w.bin", "weights")
        with run.one_record():
            run.finish("completed")
        assert writes == [] and json.loads((run.dir / "run.json").read_text())["status"] == "running"
    assert writes == [run.dir / "run.json"]
    record = json.loads((run.dir / "run.json").read_text())
    assert record["status"] == "completed" and record["best"] == 0.5
    assert [a["path"] for a in record["artifacts"]] == ["w.bin"]


def test_an_update_that_changes_nothing_recorded_leaves_run_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import socket

    from ember.track import runs

    run = RunStore(tmp_path).create("demo", config_yaml="")
    writes: list[Path] = []
    monkeypatch.setattr(runs, "atomic_write_bytes", lambda path, data: writes.append(path))
    run.update(status="running", pid=os.getpid(), host=socket.gethostname(), heartbeat=1.0)
    assert writes == []  # what run.json holds already (the heartbeat is never written to it)
    run.update(status="running", pid=os.getpid() + 1)
    assert writes == [run.dir / "run.json"]


def test_source_version_is_read_again_only_when_its_stamp_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    from ember.track import repro

    reads: list[Path] = []
    monkeypatch.setattr(repro, "_read_source_version", lambda root: reads.append(root) or {"git": "a"})
    monkeypatch.setattr(repro, "_source", (None, {}))
    assert source_version() == source_version() == {"git": "a"}
    assert len(reads) == 1
    monkeypatch.setattr(repro, "_source_stamp", lambda root: ("changed",))
    source_version()
    assert len(reads) == 2


def test_the_source_stamp_sees_an_edit_a_new_file_and_a_removed_one(tmp_path: Path) -> None:
    from ember.track.repro import _source_stamp

    (tmp_path / "a.py").write_text("x = 1\n")
    stamp = _source_stamp(tmp_path)
    assert _source_stamp(tmp_path) == stamp
    (tmp_path / "a.py").write_text("x = 22\n")
    assert _source_stamp(tmp_path) != stamp
    stamp = _source_stamp(tmp_path)
    (tmp_path / "b.py").write_text("")
    assert _source_stamp(tmp_path) != stamp
    with_b = _source_stamp(tmp_path)
    (tmp_path / "b.py").unlink()
    assert _source_stamp(tmp_path) not in (with_b, None)
