"""Translation's sentence bootstrap: sacrebleu's corpus scores from summed statistics, and its baselines."""

from __future__ import annotations

import numpy as np
import pytest

from ember.evaluate.stats import bootstrap, paired_bootstrap
from ember.metrics.translation import WordByWord, translation_statistics

sacrebleu = pytest.importorskip("sacrebleu")

REFS = [
    "In the beginning God created the heavens and the earth.",
    "The earth was formless and empty.",
    "God said, Let there be light, and there was light.",
    "God saw the light, and saw that it was good.",
    "There was evening and there was morning, the first day.",
]
HYPS = [
    "In the beginning God made the heaven and the earth.",
    "The earth was empty.",
    "And God said, let there be light: and there was light.",
    "God saw that the light was good.",
    "Evening came and morning came, one day.",
]


def test_all_sentences_once_is_sacrebleu_corpus_score() -> None:
    stats = translation_statistics(HYPS, REFS, nats=[4.0, 2.0, 3.0, 1.0, 2.0], tokens=[10, 5, 8, 7, 6])
    got = {k: float(v[0]) for k, v in stats(np.ones((1, 5))).items()}
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score, abs=1e-9)
    assert got["chrf"] == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score, abs=1e-9)
    assert got["loss"] == pytest.approx(12.0 / 36.0)
    assert got["perplexity"] == pytest.approx(np.exp(12.0 / 36.0))


def test_a_resample_scores_as_the_corpus_of_the_drawn_sentences() -> None:
    stats = translation_statistics(HYPS, REFS)
    weights = np.array([[2, 0, 1, 0, 3], [0, 1, 1, 1, 2]], dtype=float)
    got = stats(weights)
    for row, w in enumerate(weights.astype(int)):
        hyps = [h for h, k in zip(HYPS, w) for _ in range(k)]
        refs = [r for r, k in zip(REFS, w) for _ in range(k)]
        assert got["bleu"][row] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score, abs=1e-9)
        assert got["chrf"][row] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score, abs=1e-9)


def test_intervals_hold_the_score_and_a_better_system_wins_the_paired_test() -> None:
    good = translation_statistics(HYPS * 8, REFS * 8)
    scrambled = translation_statistics([" ".join(reversed(h.split())) for h in HYPS] * 8, REFS * 8)
    ci = bootstrap(good, 40, n_resamples=300)["bleu"]
    assert ci.low <= ci.value <= ci.high and ci.low < ci.high
    test = paired_bootstrap(scrambled, good, 40, n_resamples=300)["bleu"]
    assert test.difference.value > 0 and test.p_value < 0.05
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        translation_statistics(["a", "b"], ["a"])


def test_word_by_word_learns_the_lexicon_and_copies_the_unknown() -> None:
    en = ["the cat sleeps", "the dog sleeps", "a cat eats", "the dog eats bread", "a dog runs"]
    es = ["el gato duerme", "el perro duerme", "un gato come", "el perro come pan", "un perro corre"]
    lex = WordByWord(en, es)
    assert lex.lexicon["cat"] == "gato" and lex.lexicon["dog"] == "perro" and lex.lexicon["bread"] == "pan"
    assert lex.translate("The dog eats, Moses!") == "El perro come, Moses!"
