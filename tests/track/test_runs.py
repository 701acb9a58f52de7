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
