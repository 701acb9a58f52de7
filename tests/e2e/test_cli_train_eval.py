"""CLI paths end to end: train → runs → show → eval → compare, and the errors a user meets."""

import json
from pathlib import Path

CFG = "configs/digits-cnn.yaml"


def _run_id(stdout: str) -> str:
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("run "), last
    return last.split()[1]


def test_train_runs_show_eval_compare(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    runs = str(tmp_path / "runs")
    out = cli("train", CFG, "trainer.epochs=2", "model.name=cnn_tiny", "--runs-dir", runs).stdout
    run_a = _run_id(out)
    assert "val/accuracy" in out and "test/accuracy" in out
    folder = Path(runs) / run_a
    assert {"config.yaml", "model.safetensors", "metrics.jsonl", "splits", "checkpoints"} <= {
        p.name for p in folder.iterdir()
    }

    listing = cli("runs", "--runs-dir", runs).stdout
    assert run_a in listing and "val/accuracy=" in listing and "completed" in listing
    records = json.loads(cli("runs", "--runs-dir", runs, "--json").stdout)
    assert records[0]["id"] == run_a and len(records[0]["data_sha256"]) == 64

    shown = cli("runs", "show", run_a, "--runs-dir", runs).stdout
    assert "model.safetensors" in shown and "trainer:" in shown
    assert "precision fp32" in shown  # the precision the run resolved to, beside the environment

    test = json.loads(cli("eval", run_a, "--split", "test", "--json", "--runs-dir", runs).stdout)
    printed = float(
        next(line.split()[1] for line in out.splitlines() if line.split()[:1] == ["test/accuracy"])
    )
    assert abs(test["accuracy"] - printed) < 1e-4  # the saved weights and splits give the same test score
    run_b = _run_id(cli("train", CFG, "trainer.epochs=1", "model.name=cnn_tiny", "--runs-dir", runs).stdout)
    compared = cli("runs", "compare", run_a, run_b, "--runs-dir", runs).stdout
    assert "trainer.epochs: 2 -> 1" in compared and "val/accuracy" in compared


def test_config_errors_are_one_clear_line(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    proc = cli("train", CFG, "trainer.epoch=3", "--runs-dir", str(tmp_path), check=False)
    assert proc.returncode == 2
    assert "did you mean 'trainer.epochs'" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("train", CFG, "model.name=resnt", "--runs-dir", str(tmp_path), check=False)
    assert proc.returncode == 2 and "did you mean 'resnet'" in proc.stderr
    proc = cli("train", CFG, "model.widht=8", "--runs-dir", str(tmp_path), check=False)
    assert proc.returncode == 2 and "'widht'" in proc.stderr and "did you mean 'width'" in proc.stderr
    proc = cli("train", "configs/nope.yaml", check=False)
    assert proc.returncode == 2 and "config file not found" in proc.stderr
    assert (
        not (tmp_path / "ember.db").exists()
        or "running" not in cli("runs", "--runs-dir", str(tmp_path)).stdout
    )


def test_list_and_help(cli) -> None:  # type: ignore[no-untyped-def]
    assert "resnet_tiny" in cli("list", "models").stdout
    assert "digits" in cli("list", "datasets").stdout
    assert "adamw" in cli("list", "optimizers").stdout
    assert "onecycle" in cli("list", "schedules").stdout
    assert "classification" in cli("list", "tasks").stdout
    help_text = cli("train", "--help").stdout
    assert "trainer.clip_grad_norm" in help_text and "examples:" in help_text
    for verb in ("eval", "runs", "list", "data"):
        assert "example" in cli(verb, "--help").stdout
