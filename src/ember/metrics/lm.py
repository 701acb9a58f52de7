"""A language model's loss, perplexity and bits per byte with block-bootstrap intervals, beside n-grams.

The unit the bootstrap resamples is a **block**: one of the split's chunks (``chunk_size`` tokens of
the corpus, 16 windows by default), with every window scored in it. Tokens are not resampled one by
one because their losses are not independent: a hard passage (a list of names, a code table, a
change of speaker) makes many hard tokens in a row, and the next character of a word is nearly free
once its first is known. Resampling tokens as if independent treats ``N`` correlated losses as ``N``
observations and gives intervals too narrow (on the Shakespeare test split, 2.5 times narrower
than the block interval, ``benchmarks/lm_bootstrap_units.py``; windows as units, 1.9 times). Whole contiguous blocks
keep that dependence inside each draw; the blocks are also the units the run's train / val / test
split drew, so they are the data's own sampling unit. Each metric is a ratio of sums over the drawn blocks
(nats over tokens, nats over bytes), as the task computes it over the whole split.

Baselines, fitted on the tokens of the run's *training* split and scored on the very windows the
model was scored on: an add-alpha **unigram** and **bigram** model
(:func:`ember.metrics.baselines.ngram_nll`). The bigram's context for a window's first target is the
window's first input token, as the model's. ``alpha`` is chosen from :data:`ALPHAS` by the likelihood
of the last 10% of the training tokens under a model fitted on the first 90%, then the model is
refitted on all of them; the evaluated split is never looked at. The training chunks are joined in
order, so one bigram per chunk boundary (one in 4,096 by default) spans two chunks.

Example:
    >>> import numpy as np
    >>> stats = lm_statistics(np.array([10.0, 30.0]), np.array([10.0, 10.0]))
    >>> {k: round(float(v[0]), 3) for k, v in stats(np.ones((1, 2))).items()}
    {'loss': 2.0, 'perplexity': 7.389, 'bits_per_token': 2.885}
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ember.metrics.baselines import ngram_nll
from ember.metrics.statistics import Statistics

IGNORE_INDEX = -100
ALPHAS = (1.0, 0.3, 0.1, 0.03, 0.01)
"""The add-alpha smoothing values an n-gram baseline chooses from (on held-out training tokens)."""


class WindowNats:
    """Collects, per evaluated window, its summed nats, scored tokens and the bytes they spell.

    Args:
        token_bytes: UTF-8 bytes of each token id (None: bytes are not counted).

    Example:
        >>> c = WindowNats(token_bytes=torch.tensor([1, 2]))
        >>> c.update(torch.zeros(2, 3, 2), torch.tensor([[0, 1, 1], [0, 0, -100]]))
        >>> c.result().round(4).tolist()
        [[2.0794, 3.0, 5.0], [1.3863, 2.0, 2.0]]
    """

    def __init__(self, token_bytes: torch.Tensor | None = None) -> None:
        self.token_bytes = token_bytes
        self.rows: list[np.ndarray] = []

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        # (B, T, V) logits, (B, T) targets -> (B, 3): nats, tokens, bytes
        scored = target != IGNORE_INDEX
        nats = F.cross_entropy(
            output.detach().float().flatten(0, -2),
            target.flatten(),
            ignore_index=IGNORE_INDEX,
            reduction="none",
        ).view(target.shape)
        n_bytes = torch.zeros(target.shape[0], dtype=torch.float64)
        if self.token_bytes is not None:
            table = self.token_bytes.to(target.device)
            n_bytes = (table[target.clamp(min=0)] * scored).sum(dim=1).double().cpu()
        self.rows.append(
            torch.stack(
                [nats.double().sum(dim=1).cpu(), scored.sum(dim=1).double().cpu(), n_bytes], dim=1
            ).numpy()
        )

    def result(self) -> np.ndarray:
        """``(N, 3)`` float64: nats, tokens and bytes of every window, in evaluation order."""
        return np.concatenate(self.rows) if self.rows else np.zeros((0, 3))


def lm_statistics(nats: np.ndarray, tokens: np.ndarray, n_bytes: np.ndarray | None = None) -> Statistics:
    """``loss``, ``perplexity``, ``bits_per_token`` (and ``bits_per_byte``) over weighted blocks.

    Args:
        nats: ``(n,)`` summed negative log-likelihood of each block's scored tokens.
        tokens: ``(n,)`` scored tokens per block.
        n_bytes: ``(n,)`` UTF-8 bytes those tokens spell (None or all zero: no bits per byte).
    """
    nats, tokens = np.asarray(nats, np.float64), np.asarray(tokens, np.float64)
    with_bytes = n_bytes is not None and float(np.sum(n_bytes)) > 0
    b = np.asarray(n_bytes, np.float64) if with_bytes else None

    def statistics(w: np.ndarray) -> dict[str, np.ndarray]:
        total = w @ nats
        with np.errstate(invalid="ignore", divide="ignore"):
            loss = total / (w @ tokens)
            out = {
                "loss": loss,
                "perplexity": np.exp(np.minimum(loss, 700.0)),  # as the task: exp overflows past ~709
                "bits_per_token": loss / math.log(2),
            }
            if b is not None:
                out["bits_per_byte"] = total / math.log(2) / (w @ b)
        return out

    return statistics


def choose_alpha(train_tokens: np.ndarray, *, vocab_size: int, order: int) -> float:
    """The :data:`ALPHAS` value whose n-gram, fitted on the first 90% of ``train_tokens``, gives the
    last 10% the lowest mean nats (ties: the larger alpha)."""
    tokens = np.asarray(train_tokens, np.int64)
    cut = int(len(tokens) * 0.9)
    if cut < 1 or cut >= len(tokens):
        return ALPHAS[0]
    fit, held = tokens[:cut], tokens[cut - 1 :]  # the held-out part keeps its first bigram's context
    scores = [
        float(ngram_nll(fit, held, vocab_size=vocab_size, order=order, alpha=a)[1:].mean()) for a in ALPHAS
    ]
    return ALPHAS[int(np.argmin(scores))]


def ngram_window_nats(
    train_tokens: np.ndarray,
    windows: np.ndarray,
    *,
    vocab_size: int,
    order: int,
    alpha: float,
) -> np.ndarray:
    """Summed nats of each window's targets under an add-``alpha`` n-gram fitted on ``train_tokens``.

    Args:
        windows: ``(N, T + 1)`` token ids: a window's inputs followed by its last target, so its
            targets are ``windows[:, 1:]`` and each target's previous token is the one before it.

    Returns:
        ``(N,)`` float64.
    """
    windows = np.asarray(windows, np.int64)
    # one call over all windows joined: each window's first token is scored with the previous
    # window's last as context, but that entry is not a target and is dropped
    nll = ngram_nll(train_tokens, windows.ravel(), vocab_size=vocab_size, order=order, alpha=alpha)
    return nll.reshape(windows.shape)[:, 1:].sum(axis=1)


def ngram_baselines(
    train_tokens: np.ndarray, windows: np.ndarray, *, vocab_size: int, alpha: float | None = None
) -> list[tuple[str, str, np.ndarray]]:
    """The unigram and bigram baselines: ``(name, description, (N,) summed nats of each window)``.

    Args:
        train_tokens: the training split's tokens, in order.
        windows: ``(N, T + 1)`` evaluated windows (see :func:`ngram_window_nats`).
        alpha: the smoothing of both (None: each chooses its own, see :func:`choose_alpha`).
    """
    out = []
    for order, name in ((1, "unigram"), (2, "bigram")):
        a = alpha if alpha is not None else choose_alpha(train_tokens, vocab_size=vocab_size, order=order)
        nats = ngram_window_nats(train_tokens, windows, vocab_size=vocab_size, order=order, alpha=a)
        what = "P(token)" if order == 1 else "P(token | previous token)"
        how = (
            "given"
            if alpha is not None
            else f"chosen from {', '.join(f'{x:g}' for x in ALPHAS)} on held-out training tokens"
        )
        description = (
            f"add-{a:g} {name} {what} fitted on the {len(train_tokens):,} training-split tokens (alpha {how}), "
            f"vocabulary {vocab_size:,}"
        )
        out.append((name, description, nats))
    return out


def chunk_tokens(chunks: Any) -> np.ndarray:
    """Every token of a ``TokenChunks`` split, its chunks joined in order."""
    starts, lengths = chunks.spans()
    if len(starts) == 0:
        return np.zeros(0, np.int64)
    index = torch.cat([torch.arange(int(s), int(s) + int(n)) for s, n in zip(starts, lengths)])
    return chunks.tokens[index].numpy().astype(np.int64)


__all__ = [
    "ALPHAS",
    "WindowNats",
    "choose_alpha",
    "chunk_tokens",
    "lm_statistics",
    "ngram_baselines",
    "ngram_window_nats",
]
