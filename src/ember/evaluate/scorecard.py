"""A run's evaluation that can be trusted: metrics with intervals, beside baselines, and paired tests.

:func:`scorecard` turns one run's predictions on a split into the task's metrics, a bootstrap interval
for each, the baselines' scores on the *same* examples (and the same resamples), and the model's
margin over each baseline with its interval and p-value. :func:`compare` answers "is B really better
than A?" for two runs evaluated on the same split: a paired bootstrap on every metric and, for
classification, McNemar's test.

What is resampled, and the baselines, are the task's answer (``evidence`` and ``baselines`` in
`ember.tasks.contract`): classification and regression resample examples, language models blocks of
text, detection and segmentation images, translation sentence pairs. The card, its text and its
JSON are the same for every task; a task without evidence gets its metrics without intervals.

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
from typing import Any

import numpy as np
import torch

from ember.evaluate.predictions import RunPredictions
from ember.evaluate.stats import Interval, McNemar, PairedTest, bootstrap, mcnemar, paired_bootstrap
from ember.metrics.statistics import BaselineEvidence, Evidence, Statistics
from ember.tasks import contract
from ember.tasks.spec import NotApplicable

FEW = 20  # resampled units below which the card warns that its intervals are rough


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
    baselines: bool | list[BaselineEvidence] = True,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Scorecard:
    """Metrics with intervals for one run on one split, beside its baselines.

    Args:
        predictions: from :func:`~ember.evaluate.run_predictions`.
        baselines: True for the task's own (``baselines`` in `ember.tasks.contract`, fitted on the
            run's training split); False for none; or a list of your own
            :class:`~ember.metrics.statistics.BaselineEvidence` scored on the same units.
        n_resamples, confidence, seed: of the bootstrap; model and baselines share its resamples.
    """
    p = predictions
    card = Scorecard(
        run_id=p.record.id, split=p.split, n=_size(p.data), task=p.task_name, headline=p.task.headline,
        mode=p.task.mode, metrics=dict(p.metrics), intervals={}, confidence=confidence, n_resamples=n_resamples,
    )  # fmt: skip
    options: dict[str, Any] = {"n_resamples": n_resamples, "confidence": confidence, "seed": seed}
    try:
        evidence = contract.evidence(p.task, p.evaluation, p.data, n_resamples=n_resamples)
    except NotApplicable as e:
        card.notes.append(f"no intervals or baselines: {e}")
        return card
    if evidence is None:
        advice = (getattr(p.task, "instead", None) or {}).get("eval")  # the task's word on what else to run
        card.notes.append(
            f"no intervals or baselines for task '{card.task}': it gives no evidence (see ember.tasks.contract); "
            "its metrics are shown as they are" + (f"; {advice}" if advice else "")
        )
        return card
    model = _memo(evidence.statistics)  # the paired bootstraps rescore the model on the same resamples
    card.n, card.unit = evidence.n, evidence.unit
    card.intervals = bootstrap(model, evidence.n, **options)
    card.intervals.update({k: _point(v, confidence) for k, v in evidence.points.items()})
    if evidence.note:
        card.notes.append(evidence.note)
    if evidence.n < FEW:
        card.notes.append(
            f"only {evidence.n} {evidence.unit}: a bootstrap interval over so few is rough; evaluate on more"
        )
    chosen = (
        baselines if isinstance(baselines, list) else _own_baselines(p, card, options) if baselines else []
    )
    for base in chosen:
        if not isinstance(base, BaselineEvidence):
            raise TypeError(
                f"baselines are BaselineEvidence (name, description, statistics), got {type(base).__name__}"
            )
        tests = paired_bootstrap(base.statistics, model, evidence.n, **options)
        intervals = {k: t.a for k, t in tests.items()}
        intervals.update({k: _point(v, confidence) for k, v in base.points.items()})
        card.baselines.append(BaselineScore(base.name, base.description, intervals, tests.get(card.headline)))
    if p.split == "train":
        card.notes.append(
            "scored on the training split: the model and the baselines have seen these examples"
        )
    return card


def _own_baselines(p: RunPredictions, card: Scorecard, options: dict[str, Any]) -> list[BaselineEvidence]:
    """The task's baselines; when it cannot fit them (no training split kept, say), a note says why."""
    try:
        return contract.baselines(
            p.task, p.train_data, p.data, p.evaluation, p.spec, seed=options["seed"],
            n_resamples=options["n_resamples"],
        )  # fmt: skip
    except (NotApplicable, ValueError) as e:
        card.notes.append(f"no baselines: {e}")
        return []


def _size(data: Any) -> int:
    try:
        return len(data.dataset) if hasattr(data, "dataset") else len(data)
    except TypeError:
        return 0


def _memo(statistics: Statistics) -> Statistics:
    """``statistics`` that remembers its answer for weights it has already scored (by content)."""
    seen: dict[bytes, dict[str, np.ndarray]] = {}

    def remembered(w: np.ndarray) -> dict[str, np.ndarray]:
        key = hashlib.sha1(np.ascontiguousarray(w).tobytes()).digest() + str(w.shape).encode()
        if key not in seen:
            seen[key] = statistics(w)
        return seen[key]

    return remembered


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
    if a.split != b.split:
        return f"the runs were evaluated on different data ({a.split} vs {b.split})"
    if not ra.data_sha256 or not rb.data_sha256:
        return "a run has no data hash recorded, so its examples cannot be matched"
    if ra.data_sha256 != rb.data_sha256:
        return (
            f"the runs used different data or splits (data hashes {ra.data_sha256[:12]} vs {rb.data_sha256[:12]}); "
            "a paired test needs the same examples: train both with the same data and split_seed"
        )
    if a.targets.numel() and (a.targets.shape != b.targets.shape or not torch.equal(a.targets, b.targets)):
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
    """Paired bootstrap on every metric (B - A) over the task's units, and McNemar's test on right /
    wrong answers where the task gives them (classification).

    Raises:
        ValueError: the runs cannot be paired (the message says why; see :func:`comparable`).
    """
    reason = comparable(a, b)
    if reason is not None:
        raise ValueError(f"cannot pair {a.record.id} and {b.record.id}: {reason}")
    ea, eb = (contract.evidence(p.task, p.evaluation, p.data, n_resamples=n_resamples) for p in (a, b))
    if not isinstance(ea, Evidence) or not isinstance(eb, Evidence):
        raise ValueError(
            f"no paired tests for task '{a.task_name}': it gives no evidence (see ember.tasks.contract)"
        )
    if ea.n != eb.n:
        raise ValueError(f"cannot pair {a.record.id} and {b.record.id}: {ea.n} vs {eb.n} {ea.unit}")
    tests = paired_bootstrap(
        ea.statistics, eb.statistics, ea.n, n_resamples=n_resamples, confidence=confidence, seed=seed
    )
    test = mcnemar(ea.correct, eb.correct) if ea.correct is not None and eb.correct is not None else None
    return Comparison(
        a.record.id,
        b.record.id,
        a.split,
        ea.n,
        a.task.headline,
        a.task.mode,
        tests,
        test,
        confidence,
        ea.unit,
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
]
