"""Sequence to sequence (translation): teacher-forced, label-smoothed cross-entropy; BLEU and chrF.

Batches are ``(src, tgt)`` pairs of right-padded int64 ids, (B, S) and (B, T + 1), the target
wrapped in ``<bos> … <eos>`` (as `ember.data.parallel.PairLoader` gives them). The model sees
``tgt[:, :-1]`` and predicts ``tgt[:, 1:]`` (teacher forcing); padding is masked out of the
source's attention and out of the loss. The model is an encoder-decoder: ``model(src, tgt_in,
src_mask) -> (B, T, V)`` logits, plus the decoding interface of `ember.decoding.beam`.

Label smoothing moves ``label_smoothing`` of the probability mass from the true token to all
tokens evenly, exactly as ``F.cross_entropy(..., label_smoothing=)``; the reported ``loss`` (and
``perplexity``) is the plain cross-entropy per target token, comparable across smoothing settings.

Evaluation also translates: greedy search on ``val_decode_fraction`` of the validation batches
(spread evenly; the batches are length-sorted, so every length is represented) while training, and
beam search (``beam_size``, ``length_penalty``) on every test example for the final figures
(`for_test`, called by the recipe before testing). Hypotheses and references are detokenized by
the run's tokenizer and scored by sacrebleu: ``bleu`` (the headline) and ``chrf``.

Example:
    >>> import torch
    >>> task = Seq2Seq(label_smoothing=0.0)
    >>> logits, target = torch.zeros(1, 3, 5), torch.tensor([[4, 3, -100]])
    >>> round(task.loss(logits, target).item(), 4)
    1.6094
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ember.data.parallel import PairLoader
from ember.tasks.base import registry
from ember.tasks.classification import kd_loss
from ember.tasks.spec import ModelSpec, NotApplicable

if TYPE_CHECKING:  # the evaluation stage's pieces load when a stage asks, not with `import ember`
    from ember.metrics.statistics import BaselineEvidence, Evidence
    from ember.tasks.items import ReportItem

IGNORE_INDEX = -100


@dataclass(frozen=True)
class DecodeOptions:
    """How evaluation translates."""

    beam_size: int = 1
    """Hypotheses kept per sentence (1: greedy search)."""
    length_penalty: float = 1.0
    """Exponent of the length dividing a finished hypothesis's log-probability (beam search)."""
    max_len_a: float = 1.5
    """A translation stops after ``max_len_a * source_tokens + max_len_b`` tokens."""
    max_len_b: int = 10
    """See ``max_len_a``."""
    fraction: float = 1.0
    """Share of evaluation batches decoded (0: none; scores only loss and perplexity)."""


@dataclass
class Seq2SeqOutput:
    """An evaluation batch's teacher-forced logits and, when decoded, its translations."""

    logits: torch.Tensor  # (B, T, V)
    hypotheses: torch.Tensor | None  # (B, L) decoded ids, <eos> then padding; None: not decoded
    sources: torch.Tensor | None = None  # (B, S) source ids of the decoded batch


class Seq2Seq:
    """Teacher-forced encoder-decoder training; translation metrics on decoded text.

    Args:
        tokenizer: detokenizes hypotheses and references (a recipe fills the run's); without one,
            token ids are scored as space-separated words.
        label_smoothing: mass moved from the true token to all tokens (0 disables).
        val_beam_size: hypotheses kept when decoding during training (1: greedy).
        val_decode_fraction: share of validation batches decoded during training.
        beam_size, length_penalty: the final test decoding (see `ember.decoding.beam`).
        max_len_a, max_len_b: longest translation, ``a * source_tokens + b``.
        pad_id, bos_id, eos_id: special ids when there is no tokenizer.
    """

    headline = "bleu"
    mode: Literal["max", "min"] = "max"
    answers_prompt = True  # generate_text answers the prompt with its translation
    instead = {
        "check.leakage": "its inputs are sentences of varying length; the recipe holds out whole books",
        "check.shift": "token sequences of varying length have no fixed feature distribution to test",
        "check.imbalance": "its targets are sentences, not classes",
    }

    def __init__(
        self,
        *,
        tokenizer: Any = None,
        label_smoothing: float = 0.1,
        val_beam_size: int = 1,
        val_decode_fraction: float = 1.0,
        beam_size: int = 4,
        length_penalty: float = 1.0,
        max_len_a: float = 1.5,
        max_len_b: int = 10,
        pad_id: int = 0,
        bos_id: int = 2,
        eos_id: int = 3,
    ) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if not 0.0 <= val_decode_fraction <= 1.0:
            raise ValueError(f"val_decode_fraction must be in [0, 1], got {val_decode_fraction}")
        if beam_size < 1 or val_beam_size < 1:
            raise ValueError(f"beam sizes must be at least 1; got {val_beam_size} and {beam_size}")
        self.tokenizer = tokenizer
        self.label_smoothing = label_smoothing
        special = lambda name, default: (  # noqa: E731
            getattr(tokenizer, name) if getattr(tokenizer, name, None) is not None else default
        )
        self.pad_id, self.bos_id, self.eos_id = (
            special("pad_id", pad_id),
            special("bos_id", bos_id),
            special("eos_id", eos_id),
        )
        self.decoding = DecodeOptions(
            beam_size=val_beam_size, max_len_a=max_len_a, max_len_b=max_len_b, fraction=val_decode_fraction
        )
        self.test_decoding = DecodeOptions(
            beam_size=beam_size, length_penalty=length_penalty, max_len_a=max_len_a, max_len_b=max_len_b
        )
        self._batches = 0  # evaluation batches seen in the current pass

    def for_test(self) -> Seq2Seq:
        """This task decoding every example with the final beam search (for test metrics)."""
        task = copy.copy(self)
        task.decoding = replace(self.test_decoding, fraction=1.0)
        return task

    def forward(self, model: nn.Module, batch: Any) -> tuple[Any, torch.Tensor]:
        src, tgt = batch
        src_mask = src != self.pad_id
        tgt_in, tgt_out = tgt[:, :-1], tgt[:, 1:]
        target = tgt_out.masked_fill(tgt_out == self.pad_id, IGNORE_INDEX)
        logits = model(src, tgt_in, src_mask)  # (B, S), (B, T) -> (B, T, V)
        if model.training:
            return logits, target
        self._batches += 1
        if not self._decode_batch(self._batches - 1):
            return Seq2SeqOutput(logits, None), target
        return Seq2SeqOutput(logits, self._search(model, src, src_mask), src), target

    def _decode_batch(self, index: int) -> bool:
        f = self.decoding.fraction
        return math.ceil((index + 1) * f) > math.ceil(index * f)  # evenly spread, the first included

    def _search(self, model: nn.Module, src: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        # ember.decoding.beam, imported only when evaluating
        from ember.decoding.beam import beam_search, greedy_search

        d = self.decoding
        ids = dict(bos_id=self.bos_id, eos_id=self.eos_id, pad_id=self.pad_id)
        if d.beam_size == 1:
            return greedy_search(model, src, src_mask, max_len_a=d.max_len_a, max_len_b=d.max_len_b, **ids)
        return beam_search(
            model,
            src,
            src_mask,
            beam_size=d.beam_size,
            length_penalty=d.length_penalty,
            max_len_a=d.max_len_a,
            max_len_b=d.max_len_b,
            **ids,
        )

    def loss(self, output: Any, target: torch.Tensor) -> torch.Tensor:
        # (B, T, V) logits, (B, T) targets -> mean label-smoothed nats per target token
        logits = output.logits if isinstance(output, Seq2SeqOutput) else output
        return F.cross_entropy(
            logits.float().flatten(0, -2),
            target.flatten(),
            ignore_index=IGNORE_INDEX,
            label_smoothing=self.label_smoothing,
        )

    def evaluation(self) -> Seq2SeqEvaluation:
        self._batches = 0
        return Seq2SeqEvaluation(self.detokenize)

    # ------------------------------------------------------------------ lifecycle (tasks.contract)

    def example_inputs(self, spec: ModelSpec, n: int = 2, *, seed: int = 0) -> tuple[torch.Tensor, ...]:
        """``(src, tgt_in)`` token ids: sources of the spec's length, targets half as long."""
        src = spec.inputs.example(n, seed=seed)
        tgt = spec.inputs.example(n, seed=seed + 1)[:, : max(2, src.shape[1] // 2)]
        tgt[:, 0] = self.bos_id
        return src, tgt

    def export_module(self, model: nn.Module, spec: ModelSpec) -> nn.Module:
        """``(src, tgt_in) -> (B, T, V)`` logits, the source's padding mask made inside."""
        return TeacherForced(model, self.pad_id)

    def decode(self, outputs: Any, spec: ModelSpec) -> dict[str, Any]:
        raise NotApplicable(
            'a translation model answers text with text: POST /v1/generate {"prompt": "source sentence"}'
        )

    def generate_text(
        self,
        model: nn.Module,
        tokenizer: Any,
        prompt: str,
        *,
        beam_size: int | None = None,
        max_new_tokens: int | None = None,
        **options: Any,
    ) -> Iterator[str]:
        """The translation of ``prompt`` (beam search as the test figures were made), in one piece.

        Sampling options of language models (temperature, top_p ...) do not apply and are ignored.
        """
        from ember.decoding.beam import translate

        d = self.test_decoding
        max_len_b = d.max_len_b if max_new_tokens is None else max_new_tokens
        max_len_a = d.max_len_a if max_new_tokens is None else 0.0
        (text,) = translate(
            model, tokenizer, [prompt], beam_size=beam_size or d.beam_size, length_penalty=d.length_penalty,
            max_len_a=max_len_a, max_len_b=max_len_b,
        )  # fmt: skip
        yield text

    def evidence(self, evaluation: Seq2SeqEvaluation, data: Any, *, n_resamples: int = 1000) -> Evidence:
        """The decoded sentences as :class:`Evidence` over sentence pairs (`ember.metrics.translation`)."""
        from ember.metrics.translation import translation_evidence

        ev = evaluation
        return translation_evidence(
            ev.hypotheses, ev.references, nats=ev.sentence_nats, tokens=ev.sentence_tokens
        )

    def baselines(
        self, train: Any, data: Any, evaluation: Seq2SeqEvaluation, spec: ModelSpec, *, seed: int = 0,
        n_resamples: int = 1000,
    ) -> list[BaselineEvidence]:  # fmt: skip
        """``copy`` and ``word by word`` on the evaluated sentences, the lexicon from ``train``'s pairs."""
        from ember.metrics.translation import translation_baselines

        pairs = train.data if isinstance(train, PairLoader) else train  # a loader's pairs, in split order
        texts = [[self.detokenize(side.tolist()) for side in pairs[i]] for i in range(len(pairs))]
        sources, targets = [s for s, _ in texts], [t for _, t in texts]
        ev = evaluation
        return translation_baselines(ev.sources, ev.references, train_sources=sources, train_targets=targets)

    def report_items(
        self, evaluation: Seq2SeqEvaluation, data: Any, spec: ModelSpec, *, limit: int = 12
    ) -> list[ReportItem]:
        """The decoded sentences with the lowest sentence chrF: source, reference and translation."""
        from sacrebleu.metrics import CHRF

        from ember.tasks import items

        ev = evaluation
        if not ev.hypotheses:
            return [items.Table([], [], note="no sentences were decoded in this pass")]
        chrf = CHRF()
        scores = [chrf.sentence_score(h, [r]).score for h, r in zip(ev.hypotheses, ev.references)]
        order = sorted(range(len(scores)), key=lambda i: scores[i])[:limit]
        source = ev.sources if len(ev.sources) == len(scores) else [""] * len(scores)
        rows = [[i, scores[i], source[i], ev.references[i], ev.hypotheses[i]] for i in order]
        note = (
            f"the {len(order)} of {len(scores)} translations with the lowest sentence chrF; sentence = position "
            "in the evaluation order (length-sorted batches)"
        )
        return [
            items.Table(
                ["sentence", "chrF", "source", "reference", "translation"], rows, note=note, numeric=(0, 1)
            )
        ]

    def human_texts(self, evaluation: Seq2SeqEvaluation, spec: ModelSpec) -> list[dict[str, str]]:
        """Each decoded sentence: its source, its translation, and the reference translation."""
        ev = evaluation
        sources = ev.sources if len(ev.sources) == len(ev.hypotheses) else [""] * len(ev.hypotheses)
        return [
            {"input": s, "output": h, "reference": r}
            for s, h, r in zip(sources, ev.hypotheses, ev.references)
        ]

    def distill_loss(
        self,
        student: Any,
        teacher: Any,
        target: torch.Tensor,
        *,
        temperature: float = 2.0,
        alpha: float = 0.5,
    ) -> torch.Tensor:
        """Hinton's distillation loss per target token on the teacher-forced logits."""
        logits = lambda o: o.logits if isinstance(o, Seq2SeqOutput) else o  # noqa: E731
        return kd_loss(logits(student), logits(teacher), target, temperature=temperature, alpha=alpha)

    def detokenize(self, ids: Sequence[int]) -> str:
        """Text of token ids, specials dropped (the tokenizer's decode, or the ids as words)."""
        words = [i for i in ids if i not in (self.pad_id, self.bos_id, self.eos_id, IGNORE_INDEX)]
        if self.tokenizer is None:
            return " ".join(str(i) for i in words)
        return str(self.tokenizer.decode(words))


class Seq2SeqEvaluation:
    """Plain cross-entropy sums (on the device) and the decoded sentences of one pass.

    For every decoded sentence it also keeps the source text and the sentence's summed nats and
    target tokens (``sentence_nats``, ``sentence_tokens``): what `ember.metrics.translation`
    resamples for its intervals.
    """

    def __init__(self, detokenize: Any) -> None:
        self.detokenize = detokenize
        self.nats: torch.Tensor | None = None
        self.tokens: torch.Tensor | None = None
        self.hypotheses: list[str] = []
        self.references: list[str] = []
        self.sources: list[str] = []
        self.sentence_nats: list[float] = []
        self.sentence_tokens: list[int] = []

    def update(self, output: Any, target: torch.Tensor, loss: torch.Tensor) -> None:
        logits = (output.logits if isinstance(output, Seq2SeqOutput) else output).detach()
        per_token = F.cross_entropy(
            logits.float().flatten(0, -2), target.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
        ).view(target.shape)
        nats, counted = per_token.sum(), (target != IGNORE_INDEX)
        tokens = counted.sum()
        self.nats = nats if self.nats is None else self.nats + nats
        self.tokens = tokens if self.tokens is None else self.tokens + tokens
        if isinstance(output, Seq2SeqOutput) and output.hypotheses is not None:
            self.hypotheses += [self.detokenize(row) for row in output.hypotheses.tolist()]
            self.references += [self.detokenize(row) for row in target.tolist()]
            if output.sources is not None:
                self.sources += [self.detokenize(row) for row in output.sources.tolist()]
            self.sentence_nats += per_token.sum(dim=1).double().tolist()
            self.sentence_tokens += counted.sum(dim=1).tolist()

    def compute(self) -> dict[str, float]:
        if self.nats is None or self.tokens is None or int(self.tokens) == 0:
            return {"loss": float("nan")}
        loss = float(self.nats) / int(self.tokens)
        out = {"loss": loss, "perplexity": math.exp(min(loss, 700.0))}
        if self.hypotheses:
            # sacrebleu through ember.metrics, imported at the first decoded evaluation
            from ember.metrics import bleu, chrf

            out["bleu"] = bleu(self.hypotheses, self.references)
            out["chrf"] = chrf(self.hypotheses, self.references)
            out["decoded"] = float(len(self.hypotheses))
        return out


class TeacherForced(nn.Module):
    """An encoder-decoder as ``(src, tgt_in) -> logits``, masking the source's padding itself."""

    def __init__(self, model: nn.Module, pad_id: int) -> None:
        super().__init__()
        self.model, self.pad_id = model, pad_id

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        return self.model(src, tgt_in, src != self.pad_id)


@registry.register("seq2seq")
def seq2seq(
    *,
    tokenizer: Any = None,
    label_smoothing: float = 0.1,
    val_beam_size: int = 1,
    val_decode_fraction: float = 1.0,
    beam_size: int = 4,
    length_penalty: float = 1.0,
    max_len_a: float = 1.5,
    max_len_b: int = 10,
    pad_id: int = 0,
    bos_id: int = 2,
    eos_id: int = 3,
) -> Seq2Seq:
    """Teacher-forced translation with BLEU / chrF on decoded text (see :class:`Seq2Seq`)."""
    return Seq2Seq(**locals())


__all__ = ["DecodeOptions", "Seq2Seq", "Seq2SeqEvaluation", "Seq2SeqOutput", "TeacherForced", "seq2seq"]
