"""Language-model statistics over blocks, the per-window collector, and the n-gram baselines by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ember.evaluate.stats import bootstrap
from ember.metrics.baselines import ngram_nll
from ember.metrics.lm import WindowNats, choose_alpha, lm_statistics, ngram_window_nats
from ember.tasks.language_model import LanguageModel


def test_window_nats_sum_to_the_task_metrics() -> None:
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(3, 5, 7, generator=g), torch.randint(0, 7, (3, 5), generator=g)
    target[2, 4] = -100
    sizes = [0, 1, 1, 2, 1, 3, 1]
    task = LanguageModel(token_bytes=sizes)
    ev = task.evaluation()
    ev.update(logits, target, task.loss(logits, target))
    expected = ev.compute()
    collect = WindowNats(torch.tensor(sizes))
    collect.update(logits[:2], target[:2])
    collect.update(logits[2:], target[2:])
    per = collect.result()
    assert per.shape == (3, 3) and per[:, 1].tolist() == [5, 5, 4]
    assert per[:, 2].sum() == sum(sizes[t] for t in target.flatten().tolist() if t >= 0)
    got = lm_statistics(per[:, 0], per[:, 1], per[:, 2])(np.ones((1, 3)))
    for name in ("loss", "perplexity", "bits_per_token", "bits_per_byte"):
        assert got[name][0] == pytest.approx(expected[name], rel=1e-6), name


def test_statistics_are_ratios_of_weighted_sums() -> None:
    stats = lm_statistics(np.array([4.0, 10.0]), np.array([2.0, 8.0]), np.array([2.0, 16.0]))
    got = stats(np.array([[1.0, 1.0], [2.0, 0.0]]))
    assert got["loss"].tolist() == pytest.approx([14 / 10, 2.0])
    assert got["bits_per_byte"].tolist() == pytest.approx([14 / 18 / math.log(2), 2 / math.log(2)])
    assert "bits_per_byte" not in lm_statistics(np.ones(2), np.ones(2))(np.ones((1, 2)))


def _correlated_blocks(n_blocks: int, seed: int, per_block: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Per-token losses with a shared per-block difficulty (as hard passages make)."""
    g = np.random.default_rng(seed)
    difficulty = g.gamma(2.0, 1.0, n_blocks)
    tokens = difficulty[:, None] + g.normal(0, 0.3, (n_blocks, per_block)).clip(-1, 1)
    return tokens, difficulty


def test_block_interval_contains_the_estimate_narrows_and_is_wider_than_token_resampling() -> None:
    widths = []
    for n in (10, 200):
        losses, _ = _correlated_blocks(n, 1)
        ci = bootstrap(lm_statistics(losses.sum(1), np.full(n, losses.shape[1])), n, n_resamples=400)["loss"]
        assert ci.low <= ci.value <= ci.high
        widths.append(ci.high - ci.low)
        flat = losses.ravel()  # the wrong way: every token an independent draw
        naive = bootstrap(lm_statistics(flat, np.ones(len(flat))), len(flat), n_resamples=400)["loss"]
        assert naive.value == pytest.approx(ci.value) and naive.high - naive.low < 0.5 * widths[-1]
    assert widths[1] < 0.5 * widths[0]


def test_ngram_window_nats_by_hand() -> None:
    train = np.array([0, 1, 2, 0, 1, 0])  # counts 0 x3, 1 x2, 2 x1; bigrams 0->1 x2, 1->2, 2->0, 1->0
    windows = np.array([[2, 0, 1], [1, 0, 2]])  # inputs then the last target; targets: [0, 1], [0, 2]
    uni = ngram_window_nats(train, windows, vocab_size=3, order=1, alpha=1.0)
    p = {0: 4 / 9, 1: 3 / 9, 2: 2 / 9}
    assert uni.tolist() == pytest.approx([-math.log(p[0] * p[1]), -math.log(p[0] * p[2])])
    bi = ngram_window_nats(train, windows, vocab_size=3, order=2, alpha=1.0)
    # window 1: P(0|2) = (1+1)/(1+3), P(1|0) = (2+1)/(2+3); window 2: P(0|1) = (1+1)/(2+3), P(2|0) = 1/5
    assert bi.tolist() == pytest.approx([-math.log(2 / 4 * 3 / 5), -math.log(2 / 5 * 1 / 5)])


def test_choose_alpha_prefers_small_smoothing_on_a_predictable_stream() -> None:
    stream = np.tile(np.arange(5), 200)  # each token fixes the next one
    assert choose_alpha(stream, vocab_size=50, order=2) == 0.01
    expected = min(
        (1.0, 0.3, 0.1, 0.03, 0.01),
        key=lambda a: ngram_nll(stream[:900], stream[899:], vocab_size=50, alpha=a)[1:].mean(),
    )
    assert choose_alpha(stream, vocab_size=50, order=2) == expected
