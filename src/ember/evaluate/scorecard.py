"""A run's evaluation that can be trusted: metrics with intervals, beside baselines, and paired tests.

:func:`scorecard` turns one run's predictions on a split into the task's metrics, a bootstrap interval
for each, the baselines' scores on the *same* examples (and the same resamples), and the model's
margin over each baseline with its interval and p-value. :func:`compare` answers "is B really better
than A?" for two runs evaluated on the same split: a paired bootstrap on every metric and, for
classification, McNemar's test.

Classification and regression resample examples. Language models, detection, segmentation and
translation resample what their own modules say (:mod:`~ember.evaluate.language_model`: blocks of
text; :mod:`~ember.evaluate.detection`, :mod:`~ember.evaluate.segmentation`: images;
:mod:`~ember.evaluate.translation`: sentence pairs), and each brings its baselines; the card, its
text and its JSON are the same for every task.

Example:
    >>> import ember, tempfile
    >>> from ember.evaluate import run_predictions
    >>> runs = tempfile.mkdtemp()
    >>> run = ember.fit("configs/digits-cnn.yaml", {"trainer.epochs": 1, "model.name": "cnn_tiny"}, runs_dir=runs)
    >>> card = scorecard(run_predictions(run.run_id, "test", runs_dir=runs), n_resamples=200)
    >>> ci = card.intervals["accuracy"]; ci.low <= ci.value <= ci.high
    True
    >>> [b.name for b in card.baselines]
    ['majority', 'logistic regression']
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
import torch

from ember import metrics as M
from ember.evaluate import detection, language_model, segmentation, translation
from ember.evaluate.baselines import Baseline, default_baselines
from ember.evaluate.predictions import RunPredictions
from ember.evaluate.stats import (
    BaselineEvidence,
    Interval,
    McNemar,
    PairedTest,
    Statistics,
    bootstrap,
    classification_statistics,
    mcnemar,
    paired_bootstrap,
    regression_statistics,
)

STATISTICAL_TASKS = ("classification", "regression", "language_model", "detection", "segmentation", "seq2seq")
FAMILIES: dict[str, ModuleType] = {
    "language_model": language_model,
    "detection": detection,
    "segmentation": segmentation,
    "seq2seq": translation,
}
"""Tasks whose module gives ``model_evidence(p)`` and ``baseline_evidence(p, seed=...)``."""
FEW = 20  # resampled units below which the card warns that its intervals are rough
AUROC_BUDGET = 5e7  # examples x classes x resamples above which AUROC gets no interval (its cost: seconds)


def statistics_for(
    task: str, outputs: torch.Tensor, targets: torch.Tensor, *, top_k: int = 5, with_auroc: bool = True
) -> Statistics | None:
    """The task's metrics as weighted statistics of ``outputs`` (None for a task without them yet)."""
    if task == "classification":
        y = targets.argmax(dim=1) if targets.ndim == 2 else targets
        probs = outputs.double().softmax(dim=1).numpy()
        return classification_statistics(probs, y.numpy(), top_k=top_k, with_auroc=with_auroc)
    if task == "regression":
        out = (
            outputs.squeeze(1)
            if outputs.ndim == 2 and outputs.shape[1] == 1 and targets.ndim == 1
            else outputs
        )
        return regression_statistics(out.double().numpy(), targets.double().numpy())
    return None


@dataclass
class BaselineScore:
    """A baseline's metrics on the split, and the model's margin over it on the headline metric."""

    name: str
    description: str
    intervals: dict[str, Interval]
    margin: PairedTest | None  # a = baseline, b = model: ``difference`` is model - baseline


@dataclass
class Scorecard:
    """Everything ``ember eval`` shows: see the module docstring."""

    run_id: str
    split: str
    n: int
    task: str
    headline: str
    mode: str
    metrics: dict[str, float]
    intervals: dict[str, Interval]
    baselines: list[BaselineScore] = field(default_factory=list)
    confidence: float = 0.95
    n_resamples: int = 1000
    notes: list[str] = field(default_factory=list)
    unit: str = "examples"
    """What the bootstrap resampled, ``n`` of them: examples, images, or blocks of text."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the task's metrics at the top level (as ``ember eval --json`` always printed them),
        then ``intervals``, ``baselines`` (each with its ``margin``) and the facts of the evaluation."""
        return {
            "run": self.run_id,
            "split": self.split,
            "n": self.n,
            "unit": self.unit,
            "task": self.task,
            "headline": self.headline,
            "mode": self.mode,
            "confidence": self.confidence,
            "n_resamples": self.n_resamples,
            **self.metrics,
            "intervals": {k: _interval_dict(v) for k, v in self.intervals.items()},
            "baselines": [
                {
                    "name": b.name,
                    "description": b.description,
                    "intervals": {k: _interval_dict(v) for k, v in b.intervals.items()},
                    "margin": None
                    if b.margin is None
                    else {
                        "metric": self.headline,
                        "difference": _interval_dict(b.margin.difference),
                        "p_value": b.margin.p_value,
                    },
                }
                for b in self.baselines
            ],
            "notes": self.notes,
        }


def _interval_dict(ci: Interval) -> dict[str, float]:
    return {"value": ci.value, "low": ci.low, "high": ci.high}


def scorecard(
    predictions: RunPredictions,
    *,
    baselines: bool | list[Baseline] = True,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Scorecard:
    """Metrics with intervals for one run on one split, beside its baselines.

    Args:
        predictions: from :func:`~ember.evaluate.run_predictions`.
        baselines: True for the task's own (classification and regression:
            :func:`~ember.evaluate.baselines.default_baselines`; the others: their module's
            ``baseline_evidence``), all fitted on the run's training split; False for none; or a
            list of your own (:class:`~ember.evaluate.baselines.Baseline` outputs for classification
            and regression, :class:`~ember.evaluate.stats.BaselineEvidence` for the others).
        n_resamples, confidence, seed: of the bootstrap; model and baselines share its resamples.
    """
    p = predictions
    task, headline = p.task_name, p.task.headline
    n = len(p.targets) or len(p.data)
    card = Scorecard(
        run_id=p.record.id, split=p.split, n=n, task=task, headline=headline, mode=p.task.mode,
        metrics=dict(p.metrics), intervals={}, confidence=confidence, n_resamples=n_resamples,
    )  # fmt: skip
    options: dict[str, Any] = {"n_resamples": n_resamples, "confidence": confidence, "seed": seed}
    if task in FAMILIES and p.per_example is not None:
        return _family_card(card, FAMILIES[task], p, baselines, options)
    top_k = int(getattr(p.task, "top_k", 5))
    auroc = _auroc_affordable(p.outputs, n_resamples)
    stats = (
        statistics_for(task, p.outputs, p.targets, top_k=top_k, with_auroc=auroc) if len(p.targets) else None
    )
    if stats is None:
        advice = (getattr(p.task, "instead", None) or {}).get("eval")  # the task's word on what else to run
        card.notes.append(
            f"no intervals or baselines for task '{task}' yet: its metrics are shown as they are"
            + (f"; {advice}" if advice else "")
        )
        return card
    card.intervals = bootstrap(stats, n, **options)
    if task == "classification" and not auroc:
        card.intervals["auroc"] = _point(M.auroc(p.outputs, p.targets), confidence)
        card.notes.append(
            "AUROC is shown without an interval: examples x classes x resamples is over its budget"
        )
    chosen = (
        baselines
        if isinstance(baselines, list)
        else default_baselines(
            task,
            p.train_data,
            p.data,
            num_classes=p.num_classes,
            seed=seed,
            encoder=getattr(p.prepared.bundle, "encoder", None),
        )  # fmt: skip
        if baselines
        else []
    )
    # the margin needs only the headline: both sides without the costly AUROC, on the same resamples
    light = statistics_for(task, p.outputs, p.targets, top_k=top_k, with_auroc=False)
    for base in chosen:
        full = statistics_for(task, base.outputs, p.targets, top_k=top_k, with_auroc=auroc)
        base_light = statistics_for(task, base.outputs, p.targets, top_k=top_k, with_auroc=False)
        assert full is not None and base_light is not None and light is not None
        intervals = bootstrap(full, n, **options)
        if task == "classification" and not auroc:
            intervals["auroc"] = _point(M.auroc(base.outputs, p.targets), confidence)
        margin = paired_bootstrap(base_light, light, n, **options).get(headline)
        card.baselines.append(BaselineScore(base.name, base.description, intervals, margin))
    if p.split == "train":
        card.notes.append(
            "scored on the training split: the model and the baselines have seen these examples"
        )
    return card


def _family_card(
    card: Scorecard, family: ModuleType, p: RunPredictions, baselines: Any, options: dict[str, Any]
) -> Scorecard:
    """The scorecard of a task whose module resamples its own units (see the module docstring)."""
    evidence = family.model_evidence(p)
    model = _memo(evidence.statistics)  # the paired bootstraps rescore the model on the same resamples
    card.n, card.unit = evidence.n, evidence.unit
    card.intervals = bootstrap(model, evidence.n, **options)
    if evidence.note:
        card.notes.append(evidence.note)
    if evidence.n < FEW:
        card.notes.append(
            f"only {evidence.n} {evidence.unit}: a bootstrap interval over so few is rough; evaluate on more"
        )
    chosen: list[BaselineEvidence] = (
        list(baselines)
        if isinstance(baselines, list)
        else family.baseline_evidence(p, seed=options["seed"])
        if baselines
        else []
    )
    for base in chosen:
        if not isinstance(base, BaselineEvidence):
            raise TypeError(
                f"baselines for task '{card.task}' are BaselineEvidence (name, description, statistics), "
                f"got {type(base).__name__}"
            )
        tests = paired_bootstrap(base.statistics, model, evidence.n, **options)
        intervals = {k: t.a for k, t in tests.items()}
        card.baselines.append(BaselineScore(base.name, base.description, intervals, tests.get(card.headline)))
    if p.split == "train":
        card.notes.append(
            "scored on the training split: the model and the baselines have seen these examples"
        )
    return card


def _memo(statistics: Statistics) -> Statistics:
    """``statistics`` that remembers its answer for weights it has already scored (by content)."""
    seen: dict[bytes, dict[str, np.ndarray]] = {}

    def remembered(w: np.ndarray) -> dict[str, np.ndarray]:
        key = hashlib.sha1(np.ascontiguousarray(w).tobytes()).digest() + str(w.shape).encode()
        if key not in seen:
            seen[key] = statistics(w)
        return seen[key]

    return remembered


def _auroc_affordable(outputs: torch.Tensor, n_resamples: int) -> bool:
    return outputs.ndim == 2 and outputs.shape[0] * outputs.shape[1] * n_resamples <= AUROC_BUDGET


def _point(value: float, confidence: float) -> Interval:
    return Interval(value, float("nan"), float("nan"), confidence)


# --------------------------------------------------------------------------- two runs


@dataclass
class Comparison:
    """Run B against run A on the same examples."""

    a: str
    b: str
    split: str
    n: int
    headline: str
    mode: str
    tests: dict[str, PairedTest]
    mcnemar: McNemar | None
    confidence: float = 0.95
    unit: str = "examples"
    """What the bootstrap resampled: examples, images, or blocks of text."""

    @property
    def verdict(self) -> str:
        """One sentence: which run is better on the headline metric, and whether that is significant."""
        t = self.tests.get(self.headline)
        if t is None:
            return f"no paired test of {self.headline}"
        d = t.difference
        alpha = 1 - self.confidence
        where = f"{self.headline} B - A = {d.value:+.4f} [{d.low:+.4f}, {d.high:+.4f}], paired bootstrap {fmt_p(t.p_value)}"
        if self.mcnemar is not None:
            where += f", McNemar {fmt_p(self.mcnemar.p_value)}"
        if not t.significant:
            return f"no significant difference at {alpha:g} ({where}): this split cannot tell A and B apart"
        better = d.value > 0 if self.mode == "max" else d.value < 0
        text = f"B is significantly {'better' if better else 'worse'} than A at {alpha:g} ({where})"
        if self.mcnemar is not None and self.mcnemar.p_value >= alpha:
            text += "; McNemar's test does not confirm it, so treat it as weak evidence"
        return text


def comparable(a: RunPredictions, b: RunPredictions) -> str | None:
    """Why the two runs' predictions cannot be paired, or None when they can."""
    ra, rb = a.record, b.record
    if a.task_name != b.task_name:
        return f"the runs learn different tasks ({a.task_name} vs {b.task_name})"
    if not ra.data_sha256 or not rb.data_sha256:
        return "a run has no data hash recorded, so its examples cannot be matched"
    if ra.data_sha256 != rb.data_sha256:
        return (
            f"the runs used different data or splits (data hashes {ra.data_sha256[:12]} vs {rb.data_sha256[:12]}); "
            "a paired test needs the same examples: train both with the same data and split_seed"
        )
    if a.targets.shape != b.targets.shape or not torch.equal(a.targets, b.targets):
        return f"the '{a.split}' targets of the two runs differ, although their data hashes match"
    return None


def compare(
    a: RunPredictions,
    b: RunPredictions,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Comparison:
    """Paired bootstrap on every metric (B - A) and McNemar on right/wrong (classification).

    Raises:
        ValueError: the runs cannot be paired (the message says why; see :func:`comparable`).
    """
    reason = comparable(a, b)
    if reason is not None:
        raise ValueError(f"cannot pair {a.record.id} and {b.record.id}: {reason}")
    top_k = int(getattr(a.task, "top_k", 5))
    auroc = _auroc_affordable(a.outputs, n_resamples)
    n, unit = len(a.targets), "examples"
    if a.task_name in FAMILIES and a.per_example is not None and b.per_example is not None:
        ea, eb = FAMILIES[a.task_name].model_evidence(a), FAMILIES[a.task_name].model_evidence(b)
        if ea.n != eb.n:
            raise ValueError(f"cannot pair {a.record.id} and {b.record.id}: {ea.n} vs {eb.n} {ea.unit}")
        sa, sb, n, unit = ea.statistics, eb.statistics, ea.n, ea.unit
    else:
        sa = statistics_for(a.task_name, a.outputs, a.targets, top_k=top_k, with_auroc=auroc)
        sb = statistics_for(b.task_name, b.outputs, b.targets, top_k=top_k, with_auroc=auroc)
    if sa is None or sb is None:
        raise ValueError(
            f"no paired tests for task '{a.task_name}' yet (classification, regression, language models, "
            "detection and segmentation have them)"
        )
    tests = paired_bootstrap(sa, sb, n, n_resamples=n_resamples, confidence=confidence, seed=seed)
    test = None
    if a.task_name == "classification":
        y = a.targets.argmax(dim=1) if a.targets.ndim == 2 else a.targets
        test = mcnemar((a.outputs.argmax(dim=1) == y).numpy(), (b.outputs.argmax(dim=1) == y).numpy())
    return Comparison(
        a.record.id, b.record.id, a.split, n, a.task.headline, a.task.mode, tests, test, confidence, unit
    )


def fmt_p(p: float) -> str:
    """A p-value for people: ``p<0.001`` below a thousandth, else ``p=`` with three decimals."""
    if math.isnan(p):
        return "p=nan"
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


__all__ = [
    "BaselineScore",
    "Comparison",
    "Scorecard",
    "comparable",
    "compare",
    "fmt_p",
    "scorecard",
    "statistics_for",
]
