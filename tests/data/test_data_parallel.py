"""Parallel text: pair encoding, length-sorted padded batches (by count or token budget), held-out groups."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ember.data.bundle import DataError
from ember.data.parallel import PairData, PairLoader, group_splits, parallel_bundle
from ember.data.tokenizers import CharTokenizer

TOK = CharTokenizer.train(["abcdefghij xyz"])
RNG = np.random.default_rng(0)
DRAWS = ("".join(RNG.choice(list("abcdefghij"), size=n)) for n in RNG.integers(1, 12, size=200))
SOURCES = list(dict.fromkeys(DRAWS))[:40]  # distinct, so a source names its pair
TARGETS = [s[::-1] + "x" * (i % 3) for i, s in enumerate(SOURCES)]


def data() -> PairData:
    return PairData.encode(TOK, SOURCES, TARGETS, groups=np.arange(40) % 4, max_len=64)


def test_encode_adds_specials_and_cuts() -> None:
    pairs = PairData.encode(TOK, ["abcdef"], ["xy"], groups=[0], max_len=4)
    src, tgt = pairs[0]
    assert src.tolist() == TOK.encode("abc") + [TOK.eos_id]  # cut to max_len, <eos> kept
    assert tgt.tolist() == [TOK.bos_id] + TOK.encode("xy") + [TOK.eos_id]


def test_padded_batches_hold_every_pair_once() -> None:
    pairs = data()
    loader = PairLoader(pairs, batch_size=8, shuffle=False, pad_id=TOK.pad_id)
    seen = []
    for src, tgt in loader:
        assert src.dtype == tgt.dtype == torch.int64 and len(src) <= 8
        for row_src, row_tgt in zip(src.tolist(), tgt.tolist()):
            text = TOK.decode(row_src)
            seen.append(text)
            assert TARGETS[SOURCES.index(text)] == TOK.decode(row_tgt)
            # padding only after <eos>, never inside a sequence
            end = row_src.index(TOK.eos_id)
            assert set(row_src[end + 1 :]) <= {TOK.pad_id} and TOK.pad_id not in row_src[:end]
    assert sorted(seen) == sorted(SOURCES)


def test_token_budget_and_length_order() -> None:
    pairs = data()
    loader = PairLoader(pairs, max_tokens=40, shuffle=False, pad_id=TOK.pad_id)
    longest = []
    for src, tgt in loader:
        side = max(src.shape[1], tgt.shape[1] - 1)
        assert len(src) * side <= 40 or len(src) == 1
        longest.append(side)
    assert longest == sorted(longest)  # evaluation batches come shortest first
    assert sum(len(s) for s, _ in loader) == 40


def test_training_order_is_seeded_and_resumable() -> None:
    pairs = data()

    def epoch(loader: PairLoader, epoch: int, start: int = 0) -> list[list[int]]:
        loader.set_epoch(epoch, start)
        return [src[:, 0].tolist() for src, _ in loader]

    a, b = (PairLoader(pairs, batch_size=4, shuffle=True, seed=1) for _ in range(2))
    first, second = epoch(a, 0), epoch(a, 1)
    assert first == epoch(b, 0) and first != second  # same seed and epoch, same order; a new epoch reshuffles
    assert epoch(b, 1, start=3) == second[3:]  # resuming mid-epoch continues the same batches
    assert sorted(map(sorted, first)) == sorted(map(sorted, second))  # the batches themselves are fixed


def test_group_splits_hold_whole_groups() -> None:
    groups = np.array([0, 0, 1, 2, 2, 2, 3])
    parts = group_splits(["a", "b", "c", "d"], groups, val=["b"], test=["c", "d"])
    assert parts["train"].tolist() == [0, 1] and parts["val"].tolist() == [2]
    assert parts["test"].tolist() == [3, 4, 5, 6]
    with pytest.raises(DataError, match="unknown groups"):
        group_splits(["a", "b"], groups, val=["z"], test=[])
    with pytest.raises(DataError, match="both"):
        group_splits(["a", "b"], np.array([0, 1]), val=["a"], test=["a"])


def test_bundle_trains_its_tokenizer_on_training_groups_only() -> None:
    sources, targets = ["ab", "cd", "QQQ"], ["ba", "dc", "WWW"]
    bundle = parallel_bundle(
        "toy", sources, targets, ["train", "held"], np.array([0, 0, 1]),
        val_groups=[], test_groups=["held"], tokenizer="char",
    )  # fmt: skip
    assert bundle.splits is not None and bundle.splits["test"].tolist() == [2]
    assert bundle.tokenizer.encode("Q") == [bundle.tokenizer.unk_id]  # never saw the held-out text
    assert bundle.input_shape == (256,) and bundle.task == "seq2seq"
