"""`ember eval` on a language model, a detector and a segmenter: intervals, baselines and margins."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import ember

CI = r"\d+\.\d{4} \[\d+\.\d{4}, \d+\.\d{4}\]"
MARGIN = r"[+-]\d+\.\d{4} \[[+-]\d+\.\d{4}, [+-]\d+\.\d{4}\]  p[=<]"
SCENES = {
    "data.source": "digits", "data.num_train": 48, "data.num_test": 16, "data.canvas_size": 32,
    "data.batch_size": 16, "trainer.max_steps": 3, "trainer.epochs": 1,
}  # fmt: skip


def _rows(out: str, names: list[str], cells: int) -> None:
    for name in names:
        line = next(row for row in out.splitlines() if row.startswith(name + " "))
        assert len(re.findall(CI, line)) == cells, line


def test_language_model_eval_and_report(cli, tmp_path: Path, repo_root: Path) -> None:  # type: ignore[no-untyped-def]
    corpus = tmp_path / "plays.txt"
    corpus.write_text(
        "".join(
            f"ROMEO {i}:\nBut soft, what light through yonder window {i % 7} breaks?\n\n" for i in range(300)
        )
    )
    runs = str(tmp_path / "runs")
    run = ember.fit(
        repo_root / "configs/shakespeare-char-gpt.yaml",
        {"data.name": "text", "data.path": str(corpus), "data.block_size": 16, "data.chunk_size": 48,
         "model.name": "gpt_tiny", "trainer.epochs": 1, "data.windows_per_epoch": 32, "data.eval_batch_size": 16},
        runs_dir=runs, progress=False,
    ).run_id  # fmt: skip
    out = cli("eval", run, "--resamples", "200", "--runs-dir", runs).stdout
    assert re.search(rf"{run} · test split · \d+ blocks · 95% bootstrap intervals \(200 resamples\)", out)
    _rows(out, ["loss", "perplexity", "bits_per_byte"], 3)  # model, unigram, bigram
    assert "margin on loss (model - baseline; lower is better), paired bootstrap:" in out
    for name in ("unigram", "bigram"):
        assert re.search(rf"  {name} +{MARGIN}", out), out
    assert "note: unit: a block of 48 tokens" in out

    data = json.loads(
        cli("eval", run, "--json", "--resamples", "100", "--no-baselines", "--runs-dir", runs).stdout
    )
    assert data["unit"] == "blocks" and data["headline"] == "loss" and data["baselines"] == []
    ci = data["intervals"]["bits_per_byte"]
    assert ci["low"] <= ci["value"] <= ci["high"]

    page = tmp_path / "lm.html"
    cli("report", run, "--out", str(page), "--resamples", "100", "--runs-dir", runs)
    baselines = re.search(r'<section id="baselines">(.*?)</section>', page.read_text(), re.S)
    assert baselines is not None and "bigram" in baselines.group(1) and "<img" in baselines.group(1)


def test_detection_eval(cli, tmp_path: Path, repo_root: Path) -> None:  # type: ignore[no-untyped-def]
    runs = str(tmp_path / "runs")
    run = ember.fit(
        repo_root / "configs/digit-detect.yaml", {**SCENES, "model.name": "centernet_tiny"}, runs_dir=runs,
        progress=False,
    ).run_id  # fmt: skip
    out = cli("eval", run, "--resamples", "200", "--runs-dir", runs).stdout
    assert f"{run} · test split · 16 images · 95% bootstrap intervals (200 resamples)" in out
    _rows(out, ["map50", "map", "mar100"], 3)  # model, class prior, components
    assert "margin on map50 (model - baseline; higher is better), paired bootstrap:" in out
    for name in ("class prior", "components"):
        assert re.search(rf"  {name} +{MARGIN}", out), out
    assert "logistic regression trained on" in out and "note: only 16 images" in out


def test_segmentation_eval_json_and_compare(cli, tmp_path: Path, repo_root: Path) -> None:  # type: ignore[no-untyped-def]
    runs = str(tmp_path / "runs")
    run, other = (
        ember.fit(
            repo_root / "configs/digit-segment.yaml", {**SCENES, "model.name": "unet_tiny", "trainer.seed": seed},
            runs_dir=runs, progress=False,
        ).run_id
        for seed in (0, 1)
    )  # fmt: skip
    data = json.loads(cli("eval", run, "--json", "--resamples", "200", "--runs-dir", runs).stdout)
    assert data["unit"] == "images" and data["n"] == 16 and data["headline"] == "miou"
    assert {"miou", "miou_fg", "pixel_accuracy"} <= set(data["intervals"])
    majority, classical = data["baselines"]
    assert [majority["name"], classical["name"]] == ["majority", "components"]
    assert "every pixel background" in majority["description"]
    assert majority["intervals"]["miou_fg"]["value"] == 0.0  # never a digit: every digit IoU is 0
    for b in data["baselines"]:
        d = b["margin"]["difference"]
        assert d["low"] <= d["value"] <= d["high"] and 0 < b["margin"]["p_value"] <= 1
        margin = data["intervals"]["miou"]["value"] - b["intervals"]["miou"]["value"]
        assert abs(d["value"] - margin) < 1e-12

    compared = cli("runs", "compare", run, other, "--resamples", "100", "--runs-dir", runs).stdout
    assert "paired test on the test split (16 " in compared and "paired bootstrap p-value on miou" in compared


@pytest.mark.slow
def test_translation_eval_resamples_sentences_beside_copy_and_word_by_word(
    cli, fetched, tmp_path: Path, repo_root: Path
) -> None:  # type: ignore[no-untyped-def]
    fetched("en-es-verses")
    runs = str(tmp_path / "runs")
    run, other = (
        ember.fit(
            repo_root / "configs/translate-en-es.yaml",
            {"model.name": "encoder_decoder_tiny", "data.tokenizer": "char", "data.max_len": 24,
             "data.val_books": ["Phlm"], "data.test_books": ["Jude"], "task.beam_size": 2,
             "task.max_len_a": 0.0, "task.max_len_b": 6, "task.val_decode_fraction": 0.0,
             "trainer.max_steps": 2, "trainer.epochs": 1, "trainer.seed": seed},
            runs_dir=runs, progress=False,
        )
        for seed in (0, 1)
    )  # fmt: skip
    out = cli("eval", run.run_id, "--resamples", "200", "--runs-dir", runs).stdout
    assert f"{run.run_id} · test split · 25 sentences · 95% bootstrap intervals (200 resamples)" in out, out
    _rows(out, ["chrf"], 3)  # model, copy, word by word
    assert "margin on bleu (model - baseline; higher is better), paired bootstrap:" in out
    assert "the source sentence as its own translation" in out and "training pairs (Dice;" in out
    data = json.loads(cli("eval", run.run_id, "--json", "--resamples", "100", "--runs-dir", runs).stdout)
    assert data["unit"] == "sentences" and data["headline"] == "bleu"
    assert data["intervals"]["bleu"]["value"] == pytest.approx(run.metrics["test/bleu"], abs=1e-9)
    copy = data["baselines"][0]["intervals"]["chrf"]
    assert copy["low"] <= copy["value"] <= copy["high"] and copy["value"] > 0  # names carry over

    page = tmp_path / "translation.html"
    cli("report", run.run_id, "--out", str(page), "--resamples", "100", "--runs-dir", runs)
    mistakes = re.search(r'<section id="mistakes">(.*?)</section>', page.read_text(), re.S)
    assert mistakes is not None and "lowest sentence chrF" in mistakes.group(1)
    assert mistakes.group(1).count("<tr>") == 13  # the header and the 12 worst of 25

    compared = cli(
        "runs", "compare", run.run_id, other.run_id, "--resamples", "100", "--runs-dir", runs
    ).stdout
    assert "paired test on the test split (25 " in compared and "paired bootstrap p-value on bleu" in compared
