"""Language modelling: next-token cross-entropy; loss, perplexity and bits per byte.

Batches are ``(ids, targets)`` pairs of (B, T) token ids, targets being the ids shifted by one
(as `ember.data.text.LMLoader` gives them); target ``ignore_index`` (-100) is not scored. The model
maps (B, T) ids to (B, T, V) logits.

Metrics, all token-weighted over the whole pass: ``loss`` (nats per token), ``perplexity``
(``exp(loss)``), ``bits_per_token`` and, when the task knows how many UTF-8 bytes each token stands
for (``token_bytes``, filled from the tokenizer by a recipe), ``bits_per_byte``: summed nats over
``ln 2`` times the bytes the scored targets spell, comparable across tokenizers.

Example:
    >>> import torch
    >>> task = LanguageModel(token_bytes=[1, 1, 2])
    >>> logits, target = torch.zeros(1, 4, 3), torch.tensor([[0, 1, 2, 2]])
    >>> ev = task.evaluation(); ev.update(logits, target, task.loss(logits, target))
    >>> {k: round(v, 3) for k, v in ev.compute().items()}
    {'loss': 1.099, 'perplexity': 3.0, 'bits_per_token': 1.585, 'bits_per_byte': 1.057}
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ember.data.text import LMLoader
from ember.tasks.base import registry, split_batch
from ember.tasks.classification import kd_loss
from ember.tasks.spec import ModelSpec, NotApplicable

if TYPE_CHECKING:  # the evaluation stage's pieces load when a stage asks, not with `import ember`
    from ember.metrics.statistics import BaselineEvidence, Evidence
    from ember.tasks.items import ReportItem

IGNORE_INDEX = -100


class LanguageModel:
    """Next-token prediction over (B, T, V) logits.

    Args:
        token_bytes: UTF-8 bytes of each token id's text (0 for special tokens), for bits per byte.
        label_smoothing: mass moved from the true token to all tokens (0 disables).
    """

    headline = "loss"
    mode: Literal["max", "min"] = "min"
    instead = {
        "check.leakage": "its splits are whole chunks of one token stream, disjoint by construction; "
        "repeated passages across chunks are not searched",
        "check.shift": "token windows have no fixed feature distribution to test; compare the splits' "
        "perplexities (ember eval --split val / test) instead",
        "check.imbalance": "its targets are next tokens, not classes",
        "human rating": "its outputs are continuations of text: sample some with `ember generate RUN --prompt ...` "
        "and rate those",
    }

    def __init__(self, *, token_bytes: Sequence[int] | None = None, label_smoothing: float = 0.0) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.token_bytes = (
            torch.tensor(list(token_bytes), dtype=torch.long) if token_bytes is not None else None
        )
        self.label_smoothing = label_smoothing

    def forward(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        ids, target = split_batch(batch)
        return model(ids), target

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # (B, T, V) logits, (B, T) targets -> mean nats per scored token
        return F.cross_entropy(
            output.float().flatten(0, -2),
            target.flatten(),
            ignore_index=IGNORE_INDEX,
            label_smoothing=self.label_smoothing,
        )

    def evaluation(self, *, keep: bool = False) -> LanguageModelEvaluation:
        """Token-weighted sums; ``keep`` also keeps every window's nats, tokens and bytes."""
        return LanguageModelEvaluation(self.token_bytes, exact_loss=self.label_smoothing == 0.0, keep=keep)

    # ------------------------------------------------------------------ lifecycle (tasks.contract)

    def decode(self, outputs: torch.Tensor, spec: ModelSpec) -> dict[str, Any]:
        raise NotApplicable(
            'a language model continues text: POST /v1/generate {"prompt": "..."} '
            "(or `ember generate RUN --prompt ...`)"
        )

    def generate_text(self, model: nn.Module, tokenizer: Any, prompt: str, **options: Any) -> Iterator[str]:
        """Pieces of the continuation of ``prompt`` as they decode (KV cache, stop strings: see
        `ember.decoding.sampling.stream_text`)."""
        from ember.decoding.sampling import stream_text

        options.setdefault("eos_id", getattr(tokenizer, "eos_id", None))
        return stream_text(model, tokenizer, prompt, **options)

    def evidence(
        self, evaluation: LanguageModelEvaluation, data: Any, *, n_resamples: int = 1000
    ) -> Evidence:
        """The windows' sums as :class:`Evidence` over blocks of text (`ember.metrics.lm`): the split's
        chunks for a recipe's windows, each window alone for windows given as arrays."""
        from ember.metrics.lm import lm_statistics
        from ember.metrics.statistics import Evidence

        per = evaluation.windows()
        units = _units(data, len(per))
        nats, tokens, n_bytes = (units.per_block(per[:, j]) for j in range(3))
        note = units.note + f" ({int(tokens.sum()):,} tokens scored)"
        return Evidence(lm_statistics(nats, tokens, n_bytes), units.n, units.unit, note)

    def baselines(
        self, train: Any, data: Any, evaluation: LanguageModelEvaluation, spec: ModelSpec, *, seed: int = 0,
        n_resamples: int = 1000,
    ) -> list[BaselineEvidence]:  # fmt: skip
        """Add-alpha unigram and bigram models fitted on the training split's tokens, scored on the
        very windows the model was scored on (see `ember.metrics.lm`)."""
        from ember.metrics.lm import lm_statistics, ngram_baselines
        from ember.metrics.statistics import BaselineEvidence

        per = evaluation.windows()
        units = _units(data, len(per))
        if units.windows is None:
            raise NotApplicable(
                "the windows' targets are not their inputs shifted by one: no token stream to fit"
            )
        if not np.array_equal(per[:, 1], np.full(len(per), float(units.windows.shape[1] - 1))):
            raise NotApplicable(
                "n-gram baselines score every target of a window; this split has unscored targets"
            )
        vocab = int(spec.inputs.vocab_size or units.windows.max() + 1)
        tokens, n_bytes = units.per_block(per[:, 1]), units.per_block(per[:, 2])
        return [
            BaselineEvidence(name, text, lm_statistics(units.per_block(nats), tokens, n_bytes))
            for name, text, nats in ngram_baselines(_train_tokens(train), units.windows, vocab_size=vocab)
        ]

    def report_items(
        self, evaluation: LanguageModelEvaluation, data: Any, spec: ModelSpec, *, limit: int = 12
    ) -> list[ReportItem]:
        """The hardest and the easiest resampled units by loss."""
        from ember.tasks import items

        per = evaluation.windows()
        units = _units(data, len(per))
        nats, tokens = units.per_block(per[:, 0]), units.per_block(per[:, 1])
        loss = np.divide(nats, tokens, out=np.full_like(nats, np.nan), where=tokens > 0)
        order = np.argsort(-np.nan_to_num(loss, nan=-np.inf), kind="stable")
        one = units.unit.removesuffix("s")
        row = lambda i: [int(i), int(tokens[i]), float(loss[i]), float(loss[i]) / math.log(2)]  # noqa: E731
        shown: list[list[Any]] = [row(i) for i in order[:limit]]
        note = f"the {len(shown)} hardest of {len(order)} {units.unit} by loss"
        if len(order) > limit + 3:
            shown += [["...", "", "", ""]] + [row(i) for i in order[-3:]]
            note += ", then the 3 easiest"
        headers = [one, "tokens", "loss (nats per token)", "bits per token"]
        return [
            items.Table(
                headers, shown, note=f"{note}; {one} = position in the evaluated split", numeric=(0, 1, 2, 3)
            )
        ]

    def distill_loss(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor,
        target: torch.Tensor,
        *,
        temperature: float = 2.0,
        alpha: float = 0.5,
    ) -> torch.Tensor:
        """Hinton's distillation loss per scored token ((B, T, V) logits, (B, T) targets)."""
        return kd_loss(student, teacher, target, temperature=temperature, alpha=alpha)


class _Units:
    """How a split's evaluated windows group into the units the bootstrap resamples."""

    def __init__(self, windows: np.ndarray | None, block: np.ndarray, unit: str, note: str) -> None:
        self.windows = windows  # (N, T + 1) token ids: a window's inputs, then its last target
        self.block = block  # (N,) the unit of each window, 0 .. n - 1
        self.n = int(block.max(initial=-1)) + 1
        self.unit, self.note = unit, note

    def per_block(self, values: np.ndarray) -> np.ndarray:
        return np.bincount(self.block, weights=values, minlength=self.n)


def _units(data: Any, scored: int) -> _Units:
    """Blocks of a recipe's windows (`LMLoader`: the split's chunks), else each window its own unit."""
    if isinstance(data, LMLoader):
        starts = torch.cat(list(data.windows)) if len(data.windows) else torch.zeros(0, dtype=torch.long)
        windows = data.data.tokens[starts[:, None] + torch.arange(data.block_size + 1)].numpy()
        chunk = int(data.data.chunk_size)
        _, block = np.unique(starts.numpy() // chunk, return_inverse=True)
        note = (
            f"unit: a block of {chunk:,} tokens (one of the split's chunks) with its {len(starts):,} windows of "
            f"{data.block_size} tokens; whole blocks are resampled because neighbouring tokens' losses are "
            "correlated"
        )
        units = _Units(windows, block.reshape(-1), "blocks", note)
    else:
        x, y = _window_arrays(data)
        shifted = x.shape == y.shape and bool((x[:, 1:] == y[:, :-1]).all())
        joined = np.concatenate([x, y[:, -1:]], axis=1) if shifted else None
        note = (
            f"unit: a window of {x.shape[1]} tokens as the run kept it (not a chunk of a corpus); windows "
            "are resampled whole, so the interval is narrower than one over longer blocks would be"
        )
        units = _Units(joined, np.arange(len(x)), "windows", note)
    if len(units.block) != scored:
        raise ValueError(
            f"{scored} scored windows but the data has {len(units.block)}: the pass did not match"
        )
    return units


def _window_arrays(data: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` (N, T) token ids of windows given as arrays (a Python run's kept split)."""
    x, y = getattr(data, "x", None), getattr(data, "y", None)
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor) or x.ndim != 2:
        raise NotApplicable(
            f"a language model's evidence reads (N, T) token windows; got {type(data).__name__}. "
            "Evaluate on the run's own splits or on an .npz of x and y (N, T) token ids"
        )
    return x.long().numpy(), y.long().numpy()


def _train_tokens(train: Any) -> np.ndarray:
    """The training split's tokens in order (a recipe's chunks, or a Python run's windows joined)."""
    if isinstance(train, LMLoader):
        from ember.metrics.lm import chunk_tokens

        return chunk_tokens(train.data)
    x, y = _window_arrays(train)
    shifted = x.shape == y.shape and bool((x[:, 1:] == y[:, :-1]).all())
    return np.concatenate([x, y[:, -1:]], axis=1).ravel() if shifted else x.ravel()


class LanguageModelEvaluation:
    """Sums of nats, tokens and bytes kept on the device (no host sync until ``compute``); with
    ``keep``, also every window's (`ember.metrics.lm.WindowNats`)."""

    def __init__(
        self, token_bytes: torch.Tensor | None, *, exact_loss: bool = True, keep: bool = False
    ) -> None:
        self.token_bytes = token_bytes
        self.exact_loss = exact_loss  # the batch loss is the plain mean of nats (no label smoothing)
        self.nats: torch.Tensor | None = None
        self.tokens: torch.Tensor | None = None
        self.bytes: torch.Tensor | None = None
        self.window_sums: Any = None
        if keep:
            from ember.metrics.lm import WindowNats

            self.window_sums = WindowNats(token_bytes)

    def windows(self) -> np.ndarray:
        """``(N, 3)``: nats, tokens and bytes of every window of the pass (an evaluation made with
        ``keep``)."""
        if self.window_sums is None:
            raise ValueError("this evaluation kept no windows: make it with evaluation(keep=True)")
        return self.window_sums.result()

    def update(self, output: torch.Tensor, target: torch.Tensor, loss: torch.Tensor) -> None:
        if self.window_sums is not None:
            self.window_sums.update(output, target)
        flat = target.flatten()
        scored = flat != IGNORE_INDEX
        tokens = scored.sum()
        if self.exact_loss:
            nats = torch.where(tokens > 0, loss.detach().float() * tokens, 0.0)
        else:  # label smoothing shifted the loss: score the plain cross-entropy again
            nats = F.cross_entropy(
                output.float().flatten(0, -2), flat, ignore_index=IGNORE_INDEX, reduction="sum"
            )
        self.nats = nats if self.nats is None else self.nats + nats
        self.tokens = tokens if self.tokens is None else self.tokens + tokens
        if self.token_bytes is not None:
            table = self.token_bytes.to(flat.device)
            n_bytes = table[flat[scored]].sum()
            self.bytes = n_bytes if self.bytes is None else self.bytes + n_bytes

    def compute(self) -> dict[str, float]:
        if self.nats is None or self.tokens is None or int(self.tokens) == 0:
            return {"loss": float("nan")}
        nats, tokens = float(self.nats), int(self.tokens)
        loss = nats / tokens
        out = {
            "loss": loss,
            "perplexity": math.exp(min(loss, 700.0)),  # exp overflows a float past ~709
            "bits_per_token": loss / math.log(2),
        }
        if self.bytes is not None and int(self.bytes) > 0:
            out["bits_per_byte"] = nats / math.log(2) / int(self.bytes)
        return out


@registry.register("language_model")
def language_model(
    *, token_bytes: Sequence[int] | None = None, label_smoothing: float = 0.0
) -> LanguageModel:
    """Next-token cross-entropy with perplexity and bits per byte (see :class:`LanguageModel`)."""
    return LanguageModel(token_bytes=token_bytes, label_smoothing=label_smoothing)
