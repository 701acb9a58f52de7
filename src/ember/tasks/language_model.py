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
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ember.tasks.base import registry, split_batch
from ember.tasks.classification import kd_loss
from ember.tasks.spec import ModelSpec, NotApplicable

IGNORE_INDEX = -100


class LanguageModel:
    """Next-token prediction over (B, T, V) logits.

    Args:
        token_bytes: UTF-8 bytes of each token id's text (0 for special tokens), for bits per byte.
        label_smoothing: mass moved from the true token to all tokens (0 disables).
    """

    headline = "loss"
    mode: Literal["max", "min"] = "min"

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

    def evaluation(self) -> LanguageModelEvaluation:
        return LanguageModelEvaluation(self.token_bytes, exact_loss=self.label_smoothing == 0.0)

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


class LanguageModelEvaluation:
    """Sums of nats, tokens and bytes kept on the device (no host sync until ``compute``)."""

    def __init__(self, token_bytes: torch.Tensor | None, *, exact_loss: bool = True) -> None:
        self.token_bytes = token_bytes
        self.exact_loss = exact_loss  # the batch loss is the plain mean of nats (no label smoothing)
        self.nats: torch.Tensor | None = None
        self.tokens: torch.Tensor | None = None
        self.bytes: torch.Tensor | None = None

    def update(self, output: torch.Tensor, target: torch.Tensor, loss: torch.Tensor) -> None:
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
