"""Checks of a run or of raw arrays: overfitting, leakage, distribution shift, class imbalance.

Every check returns :class:`Finding` objects: a name, a severity (``info`` when all is well,
``warning`` for something to look at, ``error`` for a result that should not be trusted as is), one
sentence, and the evidence behind it (numbers, indices, p-values) as plain JSON-ready data.

:func:`run_checks` runs those the run's task takes on a finished run (a recipe's or one trained
from Python): it reads the run's splits and final model through :func:`ember.recipe.load_run`, its
loss curves from the run store, and checks

- **overfitting**: the gap between the final model's training and validation scores, and the shape
  of the validation-loss curve (the rule of the :class:`~ember.train.callbacks.OverfitWarning`
  callback, replayed);
- **leakage**: exact and near-duplicate examples across train / val / test
  (:func:`~ember.evaluate.leakage.find_duplicates`) and single features that predict the label
  (:func:`~ember.evaluate.leakage.feature_leakage`);
- **shift**: train against test inputs (and labels) with :func:`~ember.evaluate.shift.shift_test`;
- **imbalance**: class counts of the training split.

Example:
    >>> import numpy as np
    >>> check_imbalance(np.array([0] * 90 + [1] * 10)).severity
    'warning'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader

from ember.evaluate.leakage import Duplicates, feature_leakage, find_duplicates
from ember.evaluate.shift import ShiftResult, shift_test
from ember.tasks import contract

Severity = Literal["info", "warning", "error"]
SEVERITIES = ("info", "warning", "error")
CHECKS = ("overfitting", "leakage", "shift", "imbalance")
MAX_EXAMPLES = 20_000  # per split: larger file-backed splits are checked on a seeded sample
GAP_EXAMPLES = 5_000  # the final model's training score is measured on at most this many (seeded sample)


@dataclass
class Finding:
    """One result of a check.

    Args:
        name: what was checked, e.g. ``leakage.duplicates`` or ``shift``.
        severity: ``info``, ``warning`` or ``error``.
        message: one sentence for a person.
        evidence: the numbers behind it, JSON-ready.
    """

    name: str
    severity: Severity
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")

    def to_dict(self) -> dict[str, Any]:
        """``{"name", "severity", "message", "evidence"}``."""
        return {
            "name": self.name,
            "severity": self.severity,
            "message": self.message,
            "evidence": self.evidence,
        }


# --------------------------------------------------------------------------- a whole run


def run_checks(
    run_ref: str,
    *,
    runs_dir: str | Path | None = None,
    checks: Sequence[str] = CHECKS,
    near: str = "auto",
    seed: int = 0,
) -> list[Finding]:
    """Check a finished run for overfitting, leakage, shift and class imbalance, as its task allows.

    A check the run's task does not take (``applicable_checks`` in `ember.tasks.contract`) gives one
    ``info`` finding saying so and why, with ``"applicable": False`` in its evidence.

    Args:
        run_ref: a run id, unique prefix, or ``latest``.
        runs_dir: the run store (default ``$EMBER_RUNS`` or ``runs``).
        checks: a subset of ``overfitting``, ``leakage``, ``shift``, ``imbalance``.
        near: how near duplicates are found: ``auto``, ``pixel``, ``phash`` or ``embedding`` (the
            run's model's pooled features as candidates, then checked on the inputs).
        seed: seeds subsampling and the randomized tests.

    Returns:
        Findings, in the order of ``checks``.
    """
    unknown = [c for c in checks if c not in CHECKS]
    if unknown:
        raise ValueError(f"unknown check(s) {unknown}; expected some of {', '.join(CHECKS)}")
    from ember.recipe import load_run

    run = load_run(run_ref, runs_dir=runs_dir)
    skipped = contract.inapplicable_checks(run.task)
    arrays = _Splits(run, seed)
    findings: list[Finding] = []
    for check in checks:
        if check in skipped:
            findings.append(_not_applicable(check, skipped[check]))
        elif check == "overfitting":
            found = check_overfitting(_curves(run.store, run.id), _final_scores(run, seed))
            findings += found or [
                Finding("overfitting.gap", "info", "no validation split: overfitting cannot be judged", {})
            ]
        elif check == "leakage":
            findings += _leakage(run, arrays, near, seed)
        elif check == "shift":
            findings.append(_shift(run, arrays, seed))
        elif check == "imbalance":
            labels = arrays.get("train")[1]
            if labels is None or labels.dtype.kind not in "iub":
                findings.append(
                    _not_applicable("imbalance", "the training split has no integer class labels")
                )
                continue
            findings.append(check_imbalance(labels, num_classes=run.num_classes, classes=run.classes))
    for f in findings:
        f.evidence.setdefault("run", run.id)
    return findings


def _not_applicable(check: str, reason: str) -> Finding:
    return Finding(check, "info", f"not applicable: {reason}", {"applicable": False, "reason": reason})


class _Splits:
    """The run's splits as ``(x, y)`` arrays, read once each (see :func:`_arrays`)."""

    def __init__(self, run: Any, seed: int) -> None:
        self.run, self.seed, self.cache = run, seed, {}  # type: ignore[var-annotated]

    def names(self) -> list[str]:
        return self.run.available_splits()

    def get(self, name: str) -> tuple[np.ndarray, np.ndarray | None]:
        if name not in self.cache:
            self.cache[name] = _arrays(self.run.split(name), self.seed)
        return self.cache[name]


def _leakage(run: Any, arrays: _Splits, near: str, seed: int) -> list[Finding]:
    names = arrays.names()
    if "train" not in names or len(names) < 2:
        return [
            _not_applicable("leakage", f"the run has splits {', '.join(names) or 'none'}: nothing to compare")
        ]
    splits = {name: arrays.get(name) for name in names}
    if run.spec.inputs.kind == "tokens":  # token ids: exact copies only (a near id is not a near text)
        found = check_leakage(splits, near="none", features=False, seed=seed)
        why = "token ids are no features: exact copies are searched, near copies and single features are not"
        return [*found, Finding("leakage.tokens", "info", why, {})]
    embed = _embedder(run.model) if near == "embedding" else None
    return check_leakage(splits, near=near, embed=embed, seed=seed)


def _shift(run: Any, arrays: _Splits, seed: int) -> Finding:
    names = arrays.names()
    other = "test" if "test" in names else "val" if "val" in names else None
    if "train" not in names or other is None:
        return _not_applicable(
            "shift",
            f"the run has splits {', '.join(names) or 'none'}: no held-out split to compare with train",
        )
    if run.spec.inputs.kind == "tokens":
        return _not_applicable("shift", "token ids are not features whose distributions can be compared")
    (x_ref, y_ref), (x_cur, y_cur) = arrays.get("train"), arrays.get(other)
    return check_shift(x_ref, x_cur, y_reference=y_ref, y_current=y_cur, names=("train", other), seed=seed)


# --------------------------------------------------------------------------- overfitting


def check_overfitting(
    curve: dict[str, list[Any]] | None,
    scores: dict[str, Any] | None,
    *,
    patience: int = 3,
    min_rise: float = 0.05,
) -> list[Finding]:
    """Overfitting from the loss curves and from the final train/validation scores.

    Args:
        curve: ``{"epoch": [...], "train_loss": [...], "val_loss": [...]}``, one entry per
            validation (train loss: the mean logged since the previous validation), or None.
        scores: ``{"metric", "mode", "train", "val", "n_val", "train_loss", "val_loss"}`` of the final
            model in eval mode, or None.
        patience / min_rise: the curve rule of :class:`~ember.train.callbacks.OverfitWarning`.

    Returns:
        ``overfitting.curve`` and ``overfitting.gap`` findings (those that could be computed).
    """
    from ember.train.callbacks import OverfitWarning

    findings = []
    if curve and curve.get("val_loss"):
        watcher = OverfitWarning(patience=patience, min_rise=min_rise, warn=False)
        for epoch, train, val in zip(curve["epoch"], curve["train_loss"], curve["val_loss"]):
            watcher.update(train, val, epoch=epoch)
        vals = curve["val_loss"]
        best = int(np.nanargmin(vals))
        shape = {
            "validations": len(vals),
            "best_epoch": curve["epoch"][best],
            "best_val_loss": round(float(vals[best]), 6),
            "final_val_loss": round(float(vals[-1]), 6),
            "final_train_loss": round(float(curve["train_loss"][-1]), 6),
            "final_rise": round(float((vals[-1] - vals[best]) / max(abs(vals[best]), 1e-12)), 4),
        }
        if watcher.finding is not None:
            evidence = {**watcher.finding["evidence"], **shape}
            message = (
                f"validation loss turned up after epoch {evidence['best_epoch']} while training loss kept "
                f"falling (ends {shape['final_rise']:.0%} above its best)"
            )
            findings.append(Finding("overfitting.curve", "warning", message, evidence))
        else:
            message = (
                f"validation loss reached its best at epoch {shape['best_epoch']} of {curve['epoch'][-1]} "
                f"and ends {shape['final_rise']:.0%} above it: no sign of overfitting in the curve"
            )
            findings.append(Finding("overfitting.curve", "info", message, shape))
    if scores:
        findings.append(_gap_finding(scores))
    return findings


def _gap_finding(s: dict[str, Any]) -> Finding:
    sign = 1.0 if s["mode"] == "max" else -1.0
    gap = sign * (s["train"] - s["val"])  # > 0: better on train than on validation
    evidence: dict[str, Any] = {
        "metric": s["metric"],
        "train": round(s["train"], 6),
        "val": round(s["val"], 6),
        "gap": round(gap, 6),
        "train_loss": round(s["train_loss"], 6),
        "val_loss": round(s["val_loss"], 6),
    }
    proportion = s["mode"] == "max" and 0.0 <= s["val"] <= 1.0 and 0.0 <= s["train"] <= 1.0
    if proportion:  # accuracy-like: judge the gap against the validation score's sampling error
        se = math.sqrt(max(s["val"] * (1 - s["val"]), 1.0 / max(s["n_val"], 1)) / max(s["n_val"], 1))
        evidence["val_standard_error"] = round(se, 6)
        significant = gap > 3 * se
        severity: Severity = (
            "error" if significant and gap > 0.2 else "warning" if significant and gap > 0.05 else "info"
        )
        scale = f"{gap:+.3f} ({gap / se:.1f} standard errors)"
    else:  # loss-like: judge the ratio of validation to training loss
        ratio = s["val_loss"] / max(s["train_loss"], 1e-12)
        evidence["loss_ratio"] = round(ratio, 4)
        severity = "error" if ratio > 5 else "warning" if ratio > 2 else "info"
        scale = f"{gap:+.4g} (validation loss {ratio:.2f}x training loss)"
    verdict = {"info": "within what sampling explains", "warning": "the model fits training data clearly better",
               "error": "the model has largely memorized its training data"}[severity]  # fmt: skip
    message = f"train {s['metric']} {s['train']:.4f} vs validation {s['val']:.4f}: gap {scale}; {verdict}"
    return Finding("overfitting.gap", severity, message, evidence)


def _curves(store: Any, run_id: str) -> dict[str, list[Any]] | None:
    rows = store.metrics(run_id)
    curve: dict[str, list[Any]] = {"epoch": [], "step": [], "train_loss": [], "val_loss": []}
    pending: list[float] = []
    for step, epoch, name, value in rows:
        if name == "train/loss":
            pending.append(value)
        elif name == "val/loss" and pending:
            curve["epoch"].append(int(epoch) if epoch is not None else len(curve["epoch"]) + 1)
            curve["step"].append(int(step))
            curve["train_loss"].append(float(np.mean(pending)))
            curve["val_loss"].append(float(value))
            pending = []
    return curve if curve["val_loss"] else None


def _final_scores(run: Any, seed: int = 0) -> dict[str, Any] | None:
    """The final model's headline and loss on the training and validation splits (one pass each, over
    at most :data:`GAP_EXAMPLES` examples of each: a seeded sample of a larger split)."""
    if "val" not in run.available_splits() or "train" not in run.available_splits():
        return None
    from ember.evaluate.predictions import evaluation_pass
    from ember.train.loop import computed

    task = run.task
    train, val = (
        computed(evaluation_pass(run, run.eval_split(s, limit=GAP_EXAMPLES, seed=seed), task)[0])
        for s in ("train", "val")
    )
    metric, mode = task.headline, task.mode
    if metric not in train or metric not in val:  # not scored in this pass (a translation left undecoded)
        metric, mode = "loss", "min"
    return {
        "metric": metric,
        "mode": mode,
        "train": float(train[metric]),
        "val": float(val[metric]),
        "n_val": min(_size(run.split("val")), GAP_EXAMPLES),
        "train_loss": float(train["loss"]),
        "val_loss": float(val["loss"]),
    }


def _size(data: Any) -> int:
    sized: Any = data.dataset if isinstance(data, DataLoader) else data
    return len(sized)


# --------------------------------------------------------------------------- leakage


def check_leakage(
    splits: dict[str, tuple[np.ndarray, np.ndarray | None]],
    *,
    near: str = "auto",
    embed: Any = None,
    features: bool = True,
    seed: int = 0,
) -> list[Finding]:
    """Duplicates across every pair of splits, and label-revealing features in the first split.

    Args:
        splits: name → ``(x, y)``; ``y`` may be None. The first one is taken as training data.
        near: near-duplicate method for :func:`find_duplicates` (``auto``, ``pixel``, ``phash``,
            ``embedding``), or ``none``: exact copies only.
        embed: ``x -> (N, E)`` embeddings, needed for ``near="embedding"``.
        features: also look for single features that give away the label (not for token ids,
            whose positions are no features).

    Returns:
        One ``leakage.duplicates`` finding per pair of splits, then one ``leakage.feature``.
    """
    findings = []
    names = list(splits)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            (xa, ya), (xb, yb) = splits[first], splits[second]
            embeddings = (embed(xa), embed(xb)) if near == "embedding" and embed is not None else None
            method: Any = near if near != "none" else "auto"
            found = find_duplicates(xa, xb, near=near != "none", method=method, embeddings=embeddings)
            findings.append(_duplicate_finding(found, (first, second), ya, yb))
    x_train, y_train = splits[names[0]]
    if y_train is not None and features:
        leaks = feature_leakage(x_train, y_train, seed=seed)
        if leaks:
            top = leaks[0]
            message = (
                f"feature {top['feature']} alone predicts the {names[0]} labels with held-out "
                f"{top['metric']} {top['score']:.3f} (majority guess {top['baseline']:.3f}): a label leak?"
            )
            findings.append(
                Finding("leakage.feature", "error", message, {"features": leaks[:20], "split": names[0]})
            )
        else:
            findings.append(
                Finding(
                    "leakage.feature",
                    "info",
                    "no single feature predicts the label almost perfectly (held-out score < 0.98)",
                    {"split": names[0]},
                )
            )
    return findings


def _duplicate_finding(
    found: Duplicates, names: tuple[str, str], ya: np.ndarray | None, yb: np.ndarray | None
) -> Finding:
    evidence = found.to_dict()
    evidence["splits"] = list(names)
    label = f"{names[0]}/{names[1]}"
    if ya is not None and yb is not None:
        for kind, pairs in (("exact", found.exact), ("near", found.near)):
            if len(pairs):
                evidence[f"{kind}_label_conflicts"] = int((ya[pairs[:, 0]] != yb[pairs[:, 1]]).sum())
    n_second = len(np.unique(found.exact[:, 1])) if len(found.exact) else 0
    m_second = len(np.unique(found.near[:, 1])) if len(found.near) else 0
    evidence["exact_examples"], evidence["near_examples"] = n_second, m_second
    if n_second:
        severity: Severity = "error"
        message = f"{n_second} {names[1]} examples are exact copies of {names[0]} examples"
        if m_second:
            message += f", and {m_second} more are near copies"
    elif m_second:
        severity = "warning"
        message = (
            f"{m_second} {names[1]} examples are near copies of {names[0]} examples "
            f"(every value within {found.tolerance:.0%} of the range"
            + (f" after shifting up to {found.max_shift} pixel)" if found.max_shift else ")")
        )
    else:
        severity = "info"
        message = f"no exact or near duplicates between {names[0]} and {names[1]}"
    return Finding(f"leakage.duplicates:{label}", severity, message, evidence)


# --------------------------------------------------------------------------- shift, imbalance


def check_shift(
    reference: Any,
    current: Any,
    *,
    y_reference: Any = None,
    y_current: Any = None,
    alpha: float = 0.05,
    method: str = "all",
    names: tuple[str, str] = ("reference", "current"),
    permutations: int = 200,
    seed: int = 0,
) -> Finding:
    """A ``shift`` finding from :func:`shift_test`: ``warning`` when shift is detected, else ``info``."""
    result = shift_test(
        reference,
        current,
        alpha=alpha,
        method=method,  # type: ignore[arg-type]
        y_reference=y_reference,
        y_current=y_current,
        permutations=permutations,
        seed=seed,
    )
    return shift_finding(result, names)


def shift_finding(result: ShiftResult, names: tuple[str, str] = ("reference", "current")) -> Finding:
    """A :class:`Finding` that states a :class:`ShiftResult` in one sentence."""
    parts = []
    for name, t in result.tests.items():
        stat = f"AUC {t['auc']:.3f}" if name == "classifier" else f"stat {t['statistic']:.4g}"
        parts.append(f"{name} p={t['p_value']:.3g} ({stat})")
    verdict = "distribution shift detected" if result.shifted else "no distribution shift detected"
    message = (
        f"{verdict} between {names[0]} ({result.n_reference}) and {names[1]} ({result.n_current}) at "
        f"alpha={result.alpha}: combined p={result.p_value:.3g}; " + ", ".join(parts)
    )
    evidence = {**result.to_dict(), "splits": list(names)}
    return Finding("shift", "warning" if result.shifted else "info", message, evidence)


def check_imbalance(
    labels: Any,
    *,
    num_classes: int | None = None,
    classes: list[str] | None = None,
    warn_ratio: float = 3.0,
    error_ratio: float = 20.0,
) -> Finding:
    """Class counts of ``labels``: ``warning`` when the largest class outnumbers the smallest
    ``warn_ratio`` times, ``error`` at ``error_ratio`` times or when a class has no example.

    Example:
        >>> check_imbalance([0, 1, 1, 0]).severity
        'info'
    """
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).astype(np.int64)
    k = max(num_classes or 0, int(y.max()) + 1 if len(y) else 0)
    counts = np.bincount(y, minlength=k)
    names = classes if classes is not None and len(classes) == k else [str(i) for i in range(k)]
    smallest, largest = int(counts.min()), int(counts.max())
    ratio = largest / smallest if smallest else math.inf
    evidence = {
        "counts": {names[i]: int(c) for i, c in enumerate(counts)},
        "ratio": round(ratio, 3) if math.isfinite(ratio) else None,
        "majority_share": round(largest / max(len(y), 1), 4),
        "smallest_class": names[int(counts.argmin())],
        "largest_class": names[int(counts.argmax())],
    }
    if smallest == 0:
        empty = [names[i] for i in np.flatnonzero(counts == 0)]
        return Finding(
            "imbalance", "error", f"classes with no training example: {', '.join(empty)}", evidence
        )
    severity: Severity = "error" if ratio >= error_ratio else "warning" if ratio >= warn_ratio else "info"
    advice = {
        "info": "balanced enough for plain accuracy",
        "warning": "report per-class or balanced metrics, consider class weights or resampling",
        "error": "plain accuracy is misleading here; use balanced metrics and reweight or resample",
    }[severity]
    message = (
        f"largest class '{evidence['largest_class']}' has {ratio:.1f}x the examples of the smallest "
        f"'{evidence['smallest_class']}' (majority share {evidence['majority_share']:.1%}): {advice}"
    )
    return Finding("imbalance", severity, message, evidence)


# --------------------------------------------------------------------------- helpers


def _arrays(data: Any, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """``(x, y)`` numpy arrays of a split (a seeded sample of MAX_EXAMPLES for bigger ones)."""
    x = getattr(data, "x", None)
    y = getattr(data, "y", None)
    if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
        return x.cpu().numpy(), y.cpu().numpy()
    n = len(data)
    index = (
        np.arange(n)
        if n <= MAX_EXAMPLES
        else np.sort(np.random.default_rng(seed).choice(n, MAX_EXAMPLES, replace=False))
    )
    items = [data[int(i)] for i in index]
    xs = torch.stack([torch.as_tensor(item[0]) for item in items]).numpy()
    targets = [item[1] for item in items]
    labels = all(  # one number per example (a class, a value), not boxes or masks
        isinstance(t, int | float | np.number) or (isinstance(t, torch.Tensor | np.ndarray) and t.ndim == 0)
        for t in targets
    )
    return xs, np.asarray([np.asarray(t) for t in targets]) if labels and targets else None


def _embedder(model: torch.nn.Module) -> Any:
    """``x -> (N, E)`` pooled features of ``model`` (its ``forward_head(..., pre_logits=True)`` when it
    has the zoo's split, else its outputs), in eval mode and batches of 512."""

    @torch.inference_mode()
    def embed(x: np.ndarray) -> np.ndarray:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        outs = []
        for start in range(0, len(x), 512):
            batch = torch.as_tensor(x[start : start + 512]).to(device)
            features = getattr(model, "forward_features", None)
            head = getattr(model, "forward_head", None)
            if callable(features) and callable(head):
                out = head(features(batch), pre_logits=True)
            else:
                out = model(batch)
            outs.append(out.float().reshape(len(batch), -1).cpu())
        model.train(was_training)
        return torch.cat(outs).numpy()

    return embed


__all__ = [
    "CHECKS",
    "Finding",
    "Severity",
    "ShiftResult",
    "check_imbalance",
    "check_leakage",
    "check_overfitting",
    "check_shift",
    "find_duplicates",
    "run_checks",
    "shift_finding",
    "shift_test",
]
