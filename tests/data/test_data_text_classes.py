"""Labelled texts from files: a folder per class, CSV and JSONL; the tokenizer sees training texts only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import ember
from ember.data import DataError, load_dataset
from ember.data.text import TextClassBundle


def make_folder(root: Path, n: int = 12) -> Path:
    for label, letter in (("neg", "x"), ("pos", "y")):
        (root / label).mkdir(parents=True)
        for i in range(n):
            (root / label / f"{i}.txt").write_text(f"{letter * (3 + i % 4)} and more")
    return root


def test_folder_per_class(tmp_path: Path) -> None:
    bundle = load_dataset("text-classes", path=make_folder(tmp_path / "texts"), max_len=8)
    assert bundle.classes == ["neg", "pos"] and len(bundle.train) == 24
    fitted = bundle.fit(np.arange(12))  # the training split holds only "neg" texts
    assert isinstance(fitted, TextClassBundle) and fitted.train.x.shape == (24, 8)
    tok = fitted.tokenizer
    assert "y" not in tok.chars and "x" in tok.chars  # never trained on the held-out texts
    assert fitted.train.x[12, 0].item() == tok.unk_id


def test_csv_and_jsonl(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text('review,stars\n"good, really",5\nbad,1\n,3\nfine,\n')
    bundle = load_dataset("text-classes", path=tmp_path / "t.csv", text="review", target="stars")
    assert bundle.classes == ["1", "5"] and bundle.train.texts == ["good, really", "bad"]
    lines = [{"text": "hello", "label": "a"}, {"text": "bye", "label": "b"}]
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n\n")
    assert load_dataset("text-classes", path=tmp_path / "t.jsonl").classes == ["a", "b"]
    (tmp_path / "bad.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:1 needs a string 'text' and a 'label'"):
        load_dataset("text-classes", path=tmp_path / "bad.jsonl")
    with pytest.raises(DataError, match="no text column 'body'"):
        load_dataset("text-classes", path=tmp_path / "t.csv", text="body", target="stars")


@pytest.mark.parametrize("model", ["rnn_classifier_tiny", "transformer_encoder_tiny", "gpt_classifier_tiny"])
def test_text_models_train_and_reload_with_the_run_tokenizer(tmp_path: Path, model: str) -> None:
    from ember.recipe import evaluate_run

    folder = make_folder(tmp_path / "texts", n=20)
    config = {
        "data": {"name": "text-classes", "path": str(folder), "max_len": 16, "batch_size": 8},
        "model": {"name": model},
        "optim": {"lr": 0.01},
        "trainer": {"epochs": 6},
    }
    result = ember.fit(config, runs_dir=tmp_path / "runs")
    assert (result.run_dir / "tokenizer.json").is_file()
    assert result.metrics["test/accuracy"] >= 0.75
    again = evaluate_run(result.run_id, runs_dir=tmp_path / "runs")
    assert again["accuracy"] == pytest.approx(result.metrics["test/accuracy"])
