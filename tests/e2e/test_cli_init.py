"""`ember init DATA` and `ember train DATA --target COL` on a table with categories and gaps, an image
folder and a folder of texts; configs that do not fit the data fail in one line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image


def make_table(path: Path, n: int = 240) -> Path:
    rng = np.random.default_rng(0)
    lines = ["age,job,hours,label"]
    for i in range(n):
        age, job = int(rng.integers(18, 70)), str(rng.choice(["clerk", "cook", "pilot"]))
        label = "yes" if (age > 40) != (job == "pilot") else "no"
        lines.append(
            f"{'' if i % 11 == 0 else age},{'?' if i % 13 == 0 else job},{rng.normal(40, 5):.1f},{label}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def make_images(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for label, value in (("dark", 40), ("light", 210)):
        (root / label).mkdir(parents=True)
        for i in range(16):
            pixels = np.clip(rng.normal(value, 20, (10, 10)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(root / label / f"{i}.png")
    return root


def make_texts(root: Path) -> Path:
    for label, letter in (("ham", "a"), ("spam", "z")):
        (root / label).mkdir(parents=True)
        for i in range(20):
            (root / label / f"{i}.txt").write_text(f"{letter * (4 + i % 5)} message {i}")
    return root


def test_init_describes_a_table_and_writes_a_config_that_trains(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    data = make_table(tmp_path / "people.csv")
    out = cli("init", str(data), "--target", "label", "--out", str(tmp_path / "people.yaml")).stdout
    assert "240 rows, 4 columns" in out
    assert re.search(r"age +numeric +22 missing \(9\.2%\)", out) and re.search(
        r"job +categorical +19 missing", out
    )
    assert "target 'label': classification, 2 classes: no" in out
    config = yaml.safe_load((tmp_path / "people.yaml").read_text())
    assert config["data"] == {"name": "csv", "path": str(data), "target": "label", "batch_size": 64}
    assert config["model"]["name"] == "tabular_mlp"
    again = cli("init", str(data), "--out", str(tmp_path / "people.yaml"), check=False)
    assert again.returncode == 2 and "exists; pass --force" in again.stderr
    runs = str(tmp_path / "runs")
    cli(
        "train",
        str(tmp_path / "people.yaml"),
        "trainer.epochs=2",
        "model.name=tabular_mlp_tiny",
        "--runs-dir",
        runs,
    )
    folder = next((tmp_path / "runs").glob("people-*"))
    encoder = json.loads((folder / "preprocess.json").read_text())
    assert [c["name"] for c in encoder["columns"]] == ["age", "job", "hours"]
    evaluated = cli("eval", "latest", "--split", "test", "--runs-dir", runs).stdout
    assert "gradient boosting" in evaluated and "logistic regression" in evaluated


def test_train_data_target_in_one_go_and_regression_with_one_key(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    data = make_table(tmp_path / "people.csv")
    runs = str(tmp_path / "runs")
    out = cli("train", str(data), "--target", "label", "trainer.epochs=2", "--runs-dir", runs).stdout
    assert "classification, 2 classes" in out and "test/accuracy" in out
    out = cli("train", str(data), "--target", "age", "trainer.epochs=2", "--runs-dir", runs).stdout
    assert "read as regression" in out and "test/mse" in out
    # a recipe for a whole-number regression: task.name alone is enough (data.task follows)
    recipe = {"data": {"name": "csv", "path": str(data), "target": "age"}, "model": {"name": "tabular_mlp_tiny"},
              "task": {"name": "regression"}, "trainer": {"epochs": 1}}  # fmt: skip
    (tmp_path / "age.yaml").write_text(yaml.safe_dump(recipe))
    assert "test/mse" in cli("train", str(tmp_path / "age.yaml"), "--runs-dir", runs).stdout


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["model.name=cnn"],
            "model.name: 'cnn' takes images; this data is table rows (3 columns). Models that fit: tabular_mlp",
        ),
        (
            ["--target", "hours", "task.label_smoothing=0.1"],
            "task.label_smoothing does not fit task 'regression'",
        ),
        (
            ["task.name=language_model"],
            "task.name: 'language_model' does not fit data 'csv', whose targets are for 'classification'",
        ),
    ],
)
def test_keys_that_do_not_fit_fail_in_one_line(
    tmp_path: Path, cli, overrides: list[str], message: str
) -> None:  # type: ignore[no-untyped-def]
    data = make_table(tmp_path / "people.csv", n=60)
    target = [] if "--target" in overrides else ["--target", "label"]
    proc = cli("train", str(data), *target, *overrides, "--runs-dir", str(tmp_path / "runs"), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_an_image_folder_and_a_text_folder(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    images = make_images(tmp_path / "shades")
    runs = str(tmp_path / "runs")
    out = cli("train", str(images), "trainer.epochs=2", "model.name=cnn_tiny", "--runs-dir", runs).stdout
    assert "labelled images, 32 rows" in out and "image sizes: 10x10 L (32)" in out and "test/accuracy" in out
    texts = make_texts(tmp_path / "mail")
    out = cli("init", str(texts), "--out", str(tmp_path / "mail.yaml")).stdout
    assert "classes (folders): classification, 2 classes: ham 20 (50.0%), spam 20 (50.0%)" in out
    config = yaml.safe_load((tmp_path / "mail.yaml").read_text())
    assert config["data"]["name"] == "text-classes" and config["model"]["name"] == "transformer_encoder"
    out = cli(
        "train", str(texts), "trainer.epochs=3", "model.name=rnn_classifier_tiny", "--runs-dir", runs
    ).stdout
    assert "test/accuracy" in out
    proc = cli("train", str(texts), "--target", "x", "--runs-dir", runs, check=False)
    assert proc.returncode == 2 and "is a folder whose subfolders are the classes" in proc.stderr
