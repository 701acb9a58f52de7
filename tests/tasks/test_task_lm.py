"""The language-model task: loss, perplexity and bits per byte, and a text recipe end to end."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import ember
from ember import tasks
from ember.recipe import evaluate_run, load_language_model


def test_metrics_against_a_hand_computation() -> None:
    torch.manual_seed(0)
    token_bytes = [0, 1, 2, 1, 3]
    task = tasks.create("language_model", token_bytes=token_bytes)
    assert (task.headline, task.mode) == ("loss", "min")
    batches = [(torch.randn(2, 3, 5), torch.randint(0, 5, (2, 3))) for _ in range(3)]
    batches[1][1][0, 0] = -100  # an unscored position
    ev = task.evaluation()
    for logits, target in batches:
        ev.update(logits, target, task.loss(logits, target))
    metrics = ev.compute()
    logits = torch.cat([b[0].flatten(0, 1) for b in batches])
    target = torch.cat([b[1].flatten() for b in batches])
    scored = target != -100
    nats = F.cross_entropy(logits[scored], target[scored], reduction="sum").item()
    n_bytes = sum(token_bytes[t] for t in target[scored].tolist())
    assert metrics["loss"] == pytest.approx(nats / 17, rel=1e-5)
    assert metrics["perplexity"] == pytest.approx(math.exp(nats / 17), rel=1e-5)
    assert metrics["bits_per_token"] == pytest.approx(nats / 17 / math.log(2), rel=1e-5)
    assert metrics["bits_per_byte"] == pytest.approx(nats / math.log(2) / n_bytes, rel=1e-5)


def test_label_smoothing_trains_smoothed_but_reports_plain_loss() -> None:
    task = tasks.create("language_model", label_smoothing=0.1)
    logits, target = torch.randn(2, 4, 6), torch.randint(0, 6, (2, 4))
    plain = F.cross_entropy(logits.flatten(0, 1), target.flatten()).item()
    assert task.loss(logits, target).item() != pytest.approx(plain)
    ev = task.evaluation()
    ev.update(logits, target, task.loss(logits, target))
    assert ev.compute()["loss"] == pytest.approx(plain, rel=1e-5)
    assert "bits_per_byte" not in ev.compute()  # unknown without the tokenizer's byte counts


def test_text_recipe_trains_saves_tokenizer_and_reloads(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog.\n" * 200)
    config = {
        "data": {
            "name": "text",
            "path": str(corpus),
            "block_size": 16,
            "chunk_size": 64,
            "windows_per_epoch": 64,
            "batch_size": 16,
            "val_fraction": 0.2,
            "test_fraction": 0.1,
        },
        "model": {"name": "gpt_tiny"},
        "task": {"name": "language_model"},
        "optim": {"lr": 0.01},
        "trainer": {"epochs": 2, "log_every": 2},
    }
    result = ember.fit(config, runs_dir=tmp_path / "runs")
    assert result.steps == 8  # 2 epochs x 64 windows / 16
    assert result.metrics["val/loss"] < math.log(27)  # learned something over uniform guessing
    assert result.metrics["val/bits_per_byte"] == pytest.approx(result.metrics["val/bits_per_token"])
    assert (result.run_dir / "tokenizer.json").is_file()
    model, tokenizer, _ = load_language_model(result.run_id, runs_dir=tmp_path / "runs")
    assert model.block_size == 16 and tokenizer.vocab_size == model.tok_emb.num_embeddings
    test = evaluate_run(result.run_id, "test", runs_dir=tmp_path / "runs")
    assert test["loss"] == pytest.approx(result.metrics["test/loss"], rel=1e-5)
