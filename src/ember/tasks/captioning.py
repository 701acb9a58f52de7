"""Captioning: write a phrase naming what an image shows ("an ankle boot"), scored against its label.

Batches are (images, labels). Each training image is paired with a phrase drawn from the training
templates of its class (the model's `ember.data.phrases` set) and the model learns it word by word
with teacher forcing. Validation and test decode greedily (or with a beam) and report ``loss``
(per word, teacher-forced on the class's first phrase), ``accuracy`` (the caption names the image's
class and no other: the headline) and ``bleu`` (corpus BLEU-4, torchmetrics', against every phrase
of the class, held-out paraphrases included).

Example:
    >>> import torch
    >>> from ember.models import create
    >>> model, task = create("captioner_tiny", image_size=8).eval(), Captioning()
    >>> captions = task.caption(model, torch.rand(2, 1, 8, 8))
    >>> len(captions), all(isinstance(c, str) for c in captions)
    (2, True)

Through the lifecycle (`ember.tasks.contract`) a captioner answers ``/v1/predict`` with a phrase
per picture: it exports the decoding (`CaptionIds`: images → word ids, greedy) and decodes the
ids to ``captions``.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ember.data.phrases import BOS, EOS, PAD, phrase_set
from ember.tasks.base import LossMean, registry, split_batch
from ember.tasks.generative import device_of
from ember.tasks.spec import ModelSpec


class Captioning:
    """Image → phrase with a model of the encoder-decoder decoding interface (`ember.models.Captioner`).

    Args:
        beam_size: hypotheses kept while decoding for validation and test (1: greedy).
        label_smoothing: mass moved from the true word to all words in training.
    """

    headline = "accuracy"
    mode: Literal["max", "min"] = "max"
    checks: ClassVar[tuple[str, ...]] = ("overfitting", "leakage", "shift", "imbalance")
    instead: ClassVar[dict[str, str]] = {
        "distillation": "distilling a captioner is not built in; compress it with int8 or prune instead"
    }

    def __init__(self, *, beam_size: int = 1, label_smoothing: float = 0.0) -> None:
        self.beam_size = beam_size
        self.label_smoothing = label_smoothing
        self._tables: dict[tuple[str, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def phrase_table(self, model: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, P, L) ids of every training phrase in <bos> .. <eos>, and (K,) counts, on ``device``."""
        key = (model.phrases.name, device)
        if key not in self._tables:
            table, counts = model.phrases.table(bos_eos=True)
            self._tables[key] = (table.to(device), counts.to(device))
        return self._tables[key]

    def forward(self, model: Any, batch: Any) -> tuple[Any, torch.Tensor]:
        images, labels = split_batch(batch)
        table, counts = self.phrase_table(model, labels.device)
        if model.training:
            pick = (torch.rand(labels.shape[0], device=labels.device) * counts[labels]).long()
        else:
            pick = torch.zeros_like(labels)
        ids = table[labels, pick]  # (B, L)
        output: dict[str, Any] = {
            "logits": model(images, ids[:, :-1]),
            "labels": labels,
            "phrases": model.phrases,
        }
        if not model.training:
            output["captions"] = self.caption(model, images)
        return output, ids[:, 1:]

    def loss(self, output: Any, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            output["logits"].float().flatten(0, 1),
            target.flatten(),
            ignore_index=PAD,
            label_smoothing=self.label_smoothing,
        )

    def evaluation(self) -> CaptioningEvaluation:
        return CaptioningEvaluation()

    @torch.inference_mode()
    def caption(self, model: Any, images: torch.Tensor) -> list[str]:
        """One phrase per image of (B, C, H, W) ``images`` in [0, 1]."""
        # decoding lives with generation (ember.decoding.beam), imported only when captioning
        from ember.decoding.beam import beam_search

        was_training = model.training
        model.eval()
        images = images.to(device_of(model))
        ids = beam_search(
            model,
            images,
            model.source_mask(images),
            beam_size=self.beam_size,
            bos_id=BOS,
            eos_id=EOS,
            pad_id=PAD,
            max_len_a=0.0,
            max_len_b=model.block_size - 1,
        )
        model.train(was_training)
        return [model.phrases.decode(row.tolist()) for row in ids]

    # ------------------------------------------------------------------ lifecycle

    def export_module(self, model: nn.Module, spec: ModelSpec) -> nn.Module:
        """Images → (B, L) word ids of their greedy captions (what ``/v1/predict`` runs)."""
        return CaptionIds(model)

    def decode(self, outputs: torch.Tensor, spec: ModelSpec) -> dict[str, Any]:
        """``{"captions": [phrase, ...]}`` from `CaptionIds`' word ids."""
        phrases = phrase_set(_phrases_name(spec))
        return {"captions": [phrases.decode(row) for row in outputs.tolist()]}


def _phrases_name(spec: ModelSpec) -> str:
    if "phrases" in spec.kwargs:
        return str(spec.kwargs["phrases"])
    from ember import models  # the variant's default phrase set

    return str(
        inspect.signature(models.registry.get(spec.model or "captioner")).parameters["phrases"].default
    )


class CaptionIds(nn.Module):
    """A captioner as images → (B, L) word ids of greedy captions, ``<pad>`` after ``<eos>``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        from ember.decoding.beam import greedy_search

        model: Any = self.model
        return greedy_search(
            model,
            images,
            model.source_mask(images),
            bos_id=BOS,
            eos_id=EOS,
            pad_id=PAD,
            max_len_a=0.0,
            max_len_b=model.block_size - 1,
        )


class CaptioningEvaluation:
    """Keeps the pass's captions and labels; accuracy and BLEU are computed at the end."""

    def __init__(self) -> None:
        self.loss = LossMean()
        self.captions: list[str] = []
        self.labels: list[int] = []
        self.phrases: Any = None

    def update(self, output: Any, target: torch.Tensor, loss: torch.Tensor) -> None:
        self.loss.update(loss, target.shape[0])
        self.captions += output.get("captions", [])
        self.labels += output["labels"].tolist()
        self.phrases = output["phrases"]

    def compute(self) -> dict[str, float]:
        out = {"loss": self.loss.compute()}
        if not self.captions:
            return out
        from torchmetrics.functional.text import bleu_score

        phrases = self.phrases
        named = [phrases.classify(c) for c in self.captions]
        out["accuracy"] = sum(k == y for k, y in zip(named, self.labels)) / len(self.labels)
        refs = {k: phrases.phrases(k) + phrases.phrases(k, "heldout") for k in set(self.labels)}
        out["bleu"] = 100 * float(bleu_score(self.captions, [refs[y] for y in self.labels]))
        return out


@registry.register("captioning")
def captioning(*, beam_size: int = 1, label_smoothing: float = 0.0) -> Captioning:
    """Image captioning scored by class accuracy and BLEU; see :class:`Captioning`."""
    return Captioning(beam_size=beam_size, label_smoothing=label_smoothing)


__all__ = ["Captioning"]
