"""A finished run's fairness: its predictions on a split, grouped by the data's sensitive columns.

:func:`audit_run` rebuilds the run's model and split (``ember.evaluate.run_predictions``), reads
the sensitive columns of that split (:mod:`~ember.responsible.columns`) and audits every column
and their intersection (:func:`~ember.responsible.fairness.audit`). With ``postprocess`` it also
fits per-group decision rules on the validation split (:mod:`~ember.responsible.thresholds`) and
audits the split again under them, so the gap closed and the accuracy paid sit side by side.

The result is saved in the run folder as ``fairness.json`` (read by ``ember card`` and ``ember gate``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ember.responsible.columns import NoColumnsError, sensitive_columns
from ember.responsible.fairness import GroupAudit, audit, encode_groups, intersect
from ember.responsible.thresholds import Criterion, GroupRule, fit_thresholds

FILE = "fairness.json"


class NotApplicableError(ValueError):
    """An audit that does not apply to this run; the message says what to do instead."""


@dataclass
class RunFairness:
    """What :func:`audit_run` found."""

    run_id: str
    split: str
    n: int
    accuracy: float
    audits: list[GroupAudit]
    sensitive: list[str]
    rule: GroupRule | None = None
    accuracy_after: float | None = None
    audits_after: list[GroupAudit] = field(default_factory=list)

    def worst_gap(self, name: str = "demographic_parity_difference") -> float:
        """The largest value of gap ``name`` over the audited attributes."""
        return max(a.gaps[name].value for a in self.audits)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``fairness.json``)."""
        return {
            "run": self.run_id,
            "split": self.split,
            "n": self.n,
            "sensitive": self.sensitive,
            "accuracy": self.accuracy,
            "audits": [a.to_dict() for a in self.audits],
            "postprocessed": None
            if self.rule is None
            else {
                "rule": self.rule.to_dict(),
                "accuracy": self.accuracy_after,
                "audits": [a.to_dict() for a in self.audits_after],
            },
        }


def _classifier_outputs(p: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(N, K)`` probabilities and ``(N,)`` labels, or NotApplicableError for non-classifiers."""
    out, y = p.outputs, p.targets
    if out.ndim != 2 or y.ndim != 1 or y.is_floating_point() or out.shape[1] < 2:
        raise NotApplicableError(
            f"fairness audits class predictions; run {p.record.id} ({p.task_name}) makes none. Audit a "
            "classification run on data with sensitive columns (e.g. configs/adult-mlp.yaml)"
        )
    return out.double().softmax(1).numpy(), y.numpy().astype(np.int64)


def _columns(data: Any, names: list[str], run_id: str, split: str) -> dict[str, np.ndarray]:
    try:
        return sensitive_columns(data, names)
    except NoColumnsError as e:
        raise NotApplicableError(f"run {run_id}'s {split} split: {e}") from None


def audit_run(
    ref: str,
    sensitive: list[str],
    *,
    split: str = "test",
    runs_dir: str | Path | None = None,
    postprocess: Criterion | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    save: bool = True,
) -> RunFairness:
    """Audit run ``ref``'s predictions on ``split`` (see the module docstring).

    Args:
        sensitive: column names; several are also audited as their intersection.
        postprocess: ``demographic-parity`` or ``equal-opportunity`` to fit per-group rules on the
            validation split and audit again under them (None: no post-processing).
        save: write ``fairness.json`` into the run folder and record it as an artifact.
    """
    from ember.evaluate import run_predictions
    from ember.track import RunStore

    p = run_predictions(ref, split, runs_dir=runs_dir)
    probs, y = _classifier_outputs(p)
    columns = _columns(p.data, sensitive, p.record.id, split)
    classes = p.classes or [str(c) for c in range(probs.shape[1])]
    pred = probs.argmax(1)
    options: dict[str, Any] = {"classes": classes, "n_resamples": n_resamples, "seed": seed}
    result = RunFairness(
        p.record.id, split, len(y), float(np.mean(pred == y)),
        audit(y, pred, columns, probs=probs, **options), list(sensitive),
    )  # fmt: skip
    if postprocess is not None:
        if split == "val":
            raise ValueError("post-processing is fitted on the val split: audit another split (--split test)")
        v = run_predictions(ref, "val", runs_dir=runs_dir)
        vprobs, vy = _classifier_outputs(v)
        vcols = _columns(v.data, sensitive, p.record.id, "val")
        joined = [intersect(c) if len(c) > 1 else next(iter(c.values())) for c in (vcols, columns)]
        codes, names = encode_groups(np.concatenate(joined))
        vcodes, codes = codes[: len(vy)], codes[len(vy) :]
        result.rule = fit_thresholds(
            vprobs,
            vy,
            vcodes,
            criterion=postprocess,
            num_groups=len(names),
        )
        after = result.rule.predict(probs, codes)
        result.accuracy_after = float(np.mean(after == y))
        result.audits_after = audit(y, after, columns, **options)
    if save:
        run = RunStore(runs_dir).open(p.record.id)
        path = p.record.folder / FILE
        path.write_text(json.dumps(result.to_dict(), indent=1, allow_nan=True))
        run.artifact(path, "fairness")
    return result


def load_fairness(folder: Path) -> dict[str, Any] | None:
    """A run folder's saved ``fairness.json``, or None."""
    path = folder / FILE
    return json.loads(path.read_text()) if path.is_file() else None


__all__ = ["FILE", "NotApplicableError", "RunFairness", "audit_run", "load_fairness"]
