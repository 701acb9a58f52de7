"""Translation's BLEU, chrF and loss as weighted statistics over sentences, and copy and word-by-word baselines.

The unit the bootstrap resamples is a **sentence pair** of the evaluated split. Corpus BLEU and chrF
are not means of sentence scores: each is a function of *sums* over the corpus (BLEU: n-gram
matches and counts for n = 1..4 and the two lengths; chrF: character n-gram counts and matches).
So a resample draws sentences with replacement, sums their sufficient statistics (sacrebleu's own,
``_extract_corpus_statistics``) and scores the sums with sacrebleu's own formula
(``_compute_score_from_stats``): the bootstrap of Koehn (2004), as sacrebleu's ``--paired-bs``
computes it. With every sentence drawn once, the figures are exactly ``ember.metrics.bleu``
and ``chrf`` of the split. ``loss`` (and ``perplexity``) is the summed nats over summed target
tokens of the drawn sentences, as the task computes it.

Baselines, scored on the very sentences against the same references by the same sacrebleu:

- **copy**: each source sentence given as its own translation. Names, numbers and punctuation carry
  over, so it is not zero: it is the floor any model must clear.
- **word by word**: each source word replaced by the target word most associated with it over the
  run's *training* pairs (the largest Dice coefficient of sentence co-occurrence,
  ``2 c(s, t) / (c(s) + c(t))``); a word never seen in training is copied. A lexicon with no
  reordering and no context: what word statistics alone give.

Example:
    >>> import numpy as np
    >>> sentence = "the cat sat on the mat"  # BLEU needs 4-grams: a shorter sentence scores 0
    >>> stats = translation_statistics([sentence], [sentence], nats=[6.0], tokens=[6])
    >>> {k: round(float(v[0]), 3) for k, v in stats(np.ones((1, 1))).items()}
    {'bleu': 100.0, 'chrf': 100.0, 'loss': 1.0, 'perplexity': 2.718}
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ember.metrics.statistics import BaselineEvidence, Evidence, Statistics

WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)
MIN_DICE = 0.05  # below this association a source word is copied rather than translated


def _metrics() -> tuple[Any, Any]:
    from sacrebleu.metrics import BLEU, CHRF

    return BLEU(), CHRF()  # the defaults of ember.metrics.bleu / chrf (corpus_bleu, corpus_chrf)


def translation_statistics(
    hypotheses: Sequence[str],
    references: Sequence[str],
    *,
    nats: Sequence[float] | None = None,
    tokens: Sequence[int] | None = None,
) -> Statistics:
    """``bleu`` and ``chrf`` (and ``loss``, ``perplexity`` with ``nats``/``tokens``) over weighted sentences.

    Args:
        hypotheses, references: one string per sentence, in the same order.
        nats, tokens: the model's summed nats and scored target tokens per sentence.
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    bleu, chrf = _metrics()
    hyps, refs = list(hypotheses), [list(references)]
    bleu_stats = np.asarray(bleu._extract_corpus_statistics(hyps, refs), np.float64).reshape(len(hyps), -1)
    chrf_stats = np.asarray(chrf._extract_corpus_statistics(hyps, refs), np.float64).reshape(len(hyps), -1)
    with_loss = nats is not None and tokens is not None
    n_arr = np.asarray(nats if nats is not None else [], np.float64)
    t_arr = np.asarray(tokens if tokens is not None else [], np.float64)

    def statistics(w: np.ndarray) -> dict[str, np.ndarray]:
        b_sums, c_sums = w @ bleu_stats, w @ chrf_stats
        # the sums are integer counts (whole sentences drawn): sacrebleu scores them as given
        out = {
            "bleu": np.array(
                [bleu._compute_score_from_stats(list(np.rint(r).astype(int))).score for r in b_sums]
            ),
            "chrf": np.array(
                [chrf._compute_score_from_stats(list(np.rint(r).astype(int))).score for r in c_sums]
            ),
        }
        if with_loss:
            with np.errstate(invalid="ignore", divide="ignore"):
                loss = (w @ n_arr) / (w @ t_arr)
            out["loss"] = loss
            out["perplexity"] = np.exp(np.minimum(loss, 700.0))
        return out

    return statistics


def words(text: str) -> list[str]:
    """Words and punctuation marks of ``text`` (the unit the word-by-word baseline translates)."""
    return WORD.findall(text)


class WordByWord:
    """A source → target word lexicon from sentence pairs, by the Dice coefficient of co-occurrence.

    Example:
        >>> pairs = [("the cat", "el gato"), ("the dog", "el perro"), ("a cat", "un gato")]
        >>> WordByWord([s for s, _ in pairs], [t for _, t in pairs]).translate("The dog")
        'El perro'
    """

    def __init__(self, sources: Sequence[str], targets: Sequence[str]) -> None:
        from scipy import sparse

        src_words = [sorted({w.lower() for w in words(s)}) for s in sources]
        tgt_words = [sorted({w.lower() for w in words(t)}) for t in targets]
        self.src_vocab = {w: i for i, w in enumerate(sorted({w for ws in src_words for w in ws}))}
        tgt_vocab = sorted({w for ws in tgt_words for w in ws})
        tgt_index = {w: i for i, w in enumerate(tgt_vocab)}

        def incidence(rows: list[list[str]], index: dict[str, int]) -> Any:
            cols = [index[w] for ws in rows for w in ws]
            ptr = np.cumsum([0] + [len(ws) for ws in rows])
            data = np.ones(len(cols), np.float32)
            return sparse.csr_matrix((data, cols, ptr), shape=(len(rows), len(index)))

        e, f = incidence(src_words, self.src_vocab), incidence(tgt_words, tgt_index)
        together = (e.T @ f).tocsr()  # sentences holding both words
        count_e, count_f = np.asarray(e.sum(0)).ravel(), np.asarray(f.sum(0)).ravel()
        self.lexicon: dict[str, str] = {}
        inverse = {i: w for w, i in self.src_vocab.items()}
        for i in range(together.shape[0]):
            start, end = together.indptr[i], together.indptr[i + 1]
            if start == end:
                continue
            cols, both = together.indices[start:end], together.data[start:end]
            dice = 2 * both / (count_e[i] + count_f[cols])
            best = int(np.argmax(dice))
            if dice[best] >= MIN_DICE:
                self.lexicon[inverse[i]] = tgt_vocab[cols[best]]

    def translate(self, text: str) -> str:
        out = []
        for w in words(text):
            t = self.lexicon.get(w.lower(), w)
            out.append(t[:1].upper() + t[1:] if w[:1].isupper() else t)
        return _join(out)


def _join(tokens: list[str]) -> str:
    text = " ".join(tokens)
    return re.sub(r" ([.,;:!?)\]»])", r"\1", re.sub(r"([(\[¿¡«]) ", r"\1", text))


def translation_evidence(
    hypotheses: Sequence[str],
    references: Sequence[str],
    *,
    nats: Sequence[float] | None = None,
    tokens: Sequence[int] | None = None,
) -> Evidence:
    """Decoded sentences (and their nats and tokens) as :class:`Evidence` over sentence pairs."""
    if not hypotheses:
        raise ValueError(
            "the pass decoded no sentences: translation intervals need every evaluated pair decoded"
        )
    note = (
        "unit: a sentence pair; corpus BLEU and chrF are rescored by sacrebleu from the drawn sentences' "
        "summed n-gram statistics (Koehn 2004)"
    )
    stats = translation_statistics(hypotheses, references, nats=nats, tokens=tokens)
    return Evidence(stats, len(hypotheses), "sentences", note)


def translation_baselines(
    sources: Sequence[str],
    references: Sequence[str],
    *,
    train_sources: Sequence[str],
    train_targets: Sequence[str],
) -> list[BaselineEvidence]:
    """``copy`` and ``word by word`` translations of ``sources``, the lexicon learnt from the training pairs."""
    if len(sources) != len(references):
        raise ValueError("the pass kept no source sentences: the baselines translate the sources")
    lexicon = WordByWord(train_sources, train_targets)
    copy = translation_statistics(sources, references)
    word = translation_statistics([lexicon.translate(s) for s in sources], references)
    return [
        BaselineEvidence("copy", "the source sentence as its own translation", copy),
        BaselineEvidence(
            "word by word",
            f"each word replaced by its most associated target word over {len(train_sources):,} training pairs "
            f"(Dice; {len(lexicon.lexicon):,} words known, others copied)",
            word,
        ),
    ]


__all__ = [
    "WordByWord",
    "translation_baselines",
    "translation_evidence",
    "translation_statistics",
    "words",
]
