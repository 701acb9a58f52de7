"""Fairness mitigation while training: reweighing, group-balanced sampling, a constrained objective.

All three need each training example's group; the recipe gives them to the loop by widening the
target to ``(N, 2)`` int64 rows ``(label, group)`` (:func:`with_groups`), and
:class:`FairnessTask` wraps the run's own task so that the loss sees the groups while the metrics
see plain labels. Validation data may carry groups too: the wrapped evaluation then also reports
the gap the constraint is about (``dp_difference`` or ``eo_difference``), so it is logged every
epoch beside accuracy.

- :func:`reweighing`: Kamiran & Calders (2012) weights ``P(g) P(y) / P(g, y)``, which make label
  and group independent in the weighted training data; the loss is the weighted mean.
- :func:`balanced_sample`: the same target by resampling: each (group, label) cell is drawn to
  ``N P(g) P(y)`` examples (Kamiran & Calders' uniform sampling), a new pool of the same size.
- :class:`ExponentiatedGradient`: Agarwal et al. (2018)'s reduction adapted to a network trained by
  gradient steps. Each constraint ``j`` (one per group and class, and for equalized odds per true
  label too) has multipliers ``λ = B exp(θ) / (1 + Σ exp(θ))``; each step adds
  ``Σ_j λ_j γ_j`` to the loss, with ``γ_j`` the batch's violation measured on probabilities (so it
  has a gradient), and moves ``θ`` by ``η (γ̂_j - ε)`` with ``γ̂`` the violation of the hard
  predictions (an average over recent batches). Where Fairlearn re-fits a whole model per round
  and returns a randomized mixture of them, here one network follows the multipliers and the
  result is one deterministic model. Any number of classes (Fairlearn's reductions: two).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ember.tasks.base import Evaluation, Task, split_batch

Constraint = Literal["demographic-parity", "equalized-odds"]
CONSTRAINTS = ("demographic-parity", "equalized-odds")


def reweighing(y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """``(G, K)`` weight table ``P(g) P(y) / P(g, y)`` (Kamiran & Calders 2012); empty cells get 0.

    Example:
        >>> w = reweighing(np.array([1, 1, 0, 0, 0, 0]), np.array([0, 0, 0, 1, 1, 1]))
        >>> w.round(3).tolist()
        [[2.0, 0.5], [0.667, 0.0]]
    """
    y, groups = np.asarray(y, dtype=np.int64), np.asarray(groups, dtype=np.int64)
    m, k, n = int(groups.max()) + 1, int(y.max()) + 1, len(y)
    joint = np.zeros((m, k))
    np.add.at(joint, (groups, y), 1.0)
    expected = joint.sum(axis=1, keepdims=True) * joint.sum(axis=0, keepdims=True) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(joint > 0, expected / np.where(joint > 0, joint, 1.0), 0.0)


def balanced_sample(y: np.ndarray, groups: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Indices of a resampled pool of the same size in which label and group are independent.

    Each (group, label) cell is drawn (with replacement when it grows) to ``round(N P(g) P(y))``.
    """
    y, groups = np.asarray(y, dtype=np.int64), np.asarray(groups, dtype=np.int64)
    rng = np.random.default_rng(seed)
    n = len(y)
    out = []
    for g in np.unique(groups):
        for c in np.unique(y):
            cell = np.flatnonzero((groups == g) & (y == c))
            if not len(cell):
                continue
            size = round(n * np.mean(groups == g) * np.mean(y == c))
            out.append(rng.choice(cell, size=size, replace=size > len(cell)))
    idx = np.concatenate(out)
    rng.shuffle(idx)
    return idx


def with_groups(y: torch.Tensor, groups: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``(N,)`` labels and ``(N,)`` group codes -> ``(N, 2)`` int64 targets ``(label, group)``."""
    g = torch.as_tensor(np.asarray(groups), dtype=torch.int64)
    return torch.stack([y.long(), g], dim=1)


class ExponentiatedGradient:
    """The multipliers of a fairness constraint and their exponentiated-gradient updates.

    Args:
        constraint: ``demographic-parity`` (selection rates per class equal across groups) or
            ``equalized-odds`` (the same within each true label).
        num_groups, num_classes: sizes of the constraint table.
        bound: ``B``, the largest total multiplier (Agarwal et al.'s bound; larger enforces harder).
        eta: the step of θ per optimizer step.
        slack: ``ε``, the violation allowed before the multipliers grow.
        window: optimizer steps whose hard predictions make one update of θ.
    """

    def __init__(
        self,
        constraint: Constraint,
        num_groups: int,
        num_classes: int,
        *,
        bound: float = 10.0,
        eta: float = 0.5,
        slack: float = 0.005,
        window: int = 50,
    ) -> None:
        if constraint not in CONSTRAINTS:
            raise ValueError(f"constraint must be one of {CONSTRAINTS}, got {constraint!r}")
        self.constraint = constraint
        self.m, self.k = num_groups, num_classes
        self.bound, self.eta, self.slack, self.window = bound, eta, slack, max(1, window)
        # binary: only the positive class is constrained (the other's rate is its complement)
        self.classes = [1] if num_classes == 2 else list(range(num_classes))
        labels = 1 if constraint == "demographic-parity" else 2  # equalized odds: y == c and y != c
        self.shape = (labels, num_groups, len(self.classes))
        self.theta = torch.zeros(2, *self.shape, dtype=torch.float64)  # [+, -] parts
        self.violation = torch.zeros(self.shape, dtype=torch.float64)  # of the last window
        self.counts: torch.Tensor | None = None
        self.steps = self.updates = 0

    def _masks(self, y: torch.Tensor, like: torch.Tensor) -> list[torch.Tensor]:
        """Who each constraint counts, ``(B, C)`` per true-label condition."""
        if self.constraint == "demographic-parity":
            return [torch.ones_like(like)]
        is_c = (y[:, None] == torch.tensor(self.classes, device=y.device)[None]).to(like.dtype)
        return [is_c, 1.0 - is_c]  # among true c, among the rest

    def multipliers(self) -> torch.Tensor:
        """``(2, labels, groups, classes)`` λ ≥ 0 with ``Σ λ <= B``."""
        e = self.theta.exp()
        return self.bound * e / (1.0 + e.sum())

    def violations(self, probs: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """``(labels, groups, classes)`` batch violations ``rate(group) - rate(all)`` of ``probs``."""
        probs = probs[:, self.classes]  # (B, C)
        out = torch.zeros(self.shape, dtype=probs.dtype, device=probs.device)
        onehot = F.one_hot(g, self.m).to(probs.dtype)  # (B, M)
        masks = self._masks(y, probs)
        for i, mask in enumerate(masks):
            total = mask.sum(0)  # (C,)
            overall = (probs * mask).sum(0) / total.clamp_min(1.0)
            per_group = (onehot.T @ (probs * mask)) / (onehot.T @ mask).clamp_min(1.0)  # (M, C)
            present = (onehot.T @ mask) > 0
            out[i] = torch.where(present, per_group - overall, torch.zeros_like(per_group))
        return out

    def penalty(self, probs: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """``Σ_j (λ+_j - λ-_j) γ_j`` on this batch; in training also tallies the hard predictions and
        moves θ once every ``window`` steps, on the violation of the whole window."""
        gamma = self.violations(probs, y, g)
        lam = self.multipliers().to(gamma)
        value = ((lam[0] - lam[1]) * gamma).sum()
        if torch.is_grad_enabled():
            with torch.no_grad():
                hard = F.one_hot(probs.argmax(1), probs.shape[1]).to(probs.dtype)
                counts = self.tally(hard, y, g)
                self.counts = counts if self.counts is None else self.counts + counts
                self.steps += 1
                if self.steps % self.window == 0:
                    self.update()
        return value

    def tally(self, hard: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """``(2, labels, groups + 1, classes)``: selected and eligible counts per group, and overall."""
        hard = hard[:, self.classes].double().cpu()
        y, g = y.cpu(), g.cpu()
        onehot = F.one_hot(g, self.m).double()
        masks = self._masks(y, hard)
        out = torch.zeros(2, self.shape[0], self.m + 1, len(self.classes), dtype=torch.float64)
        for i, mask in enumerate(masks):
            out[0, i, : self.m] = onehot.T @ (hard * mask)
            out[1, i, : self.m] = onehot.T @ mask
            out[0, i, self.m] = (hard * mask).sum(0)
            out[1, i, self.m] = mask.sum(0)
        return out

    def update(self) -> None:
        """One exponentiated-gradient step on the violation of the predictions since the last one."""
        if self.counts is None:
            return
        selected, eligible = self.counts
        rates = selected / eligible.clamp_min(1.0)
        present = eligible[:, : self.m] > 0
        self.violation = torch.where(present, rates[:, : self.m] - rates[:, self.m :], 0.0)
        self.updates += 1
        step = self.eta / math.sqrt(self.updates)  # decreasing steps: the last multipliers settle
        self.theta[0] += step * (self.violation - self.slack)
        self.theta[1] += step * (-self.violation - self.slack)
        self.counts = None

    def state(self) -> dict[str, Any]:
        """What to record with the run: the multipliers and the running violation."""
        return {
            "constraint": self.constraint,
            "largest_multiplier": float(self.multipliers().max()),
            "running_violation": float(self.violation.abs().max()),
        }


class FairnessTask:
    """``task`` with a fairness-aware loss; its targets may be ``(N, 2)`` rows ``(label, group)``.

    Args:
        task: the run's task (its forward, metrics, headline and mode are kept).
        weights: an optional ``(G, K)`` table of example weights by (group, label) (reweighing).
        constraint: an optional :class:`ExponentiatedGradient`.
        gap: the gap the validation metrics report (``dp_difference`` or ``eo_difference``).
    """

    def __init__(
        self,
        task: Task,
        *,
        weights: np.ndarray | None = None,
        constraint: ExponentiatedGradient | None = None,
        gap: str = "dp_difference",
    ) -> None:
        self.task = task
        self.headline, self.mode = task.headline, task.mode
        self.weights = torch.as_tensor(weights, dtype=torch.float32) if weights is not None else None
        self.constraint = constraint
        self.gap = gap

    def forward(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, target = split_batch(batch)
        return model(inputs), target

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not _grouped(target):
            return self.task.loss(output, target)
        y, g = target[:, 0], target[:, 1]
        logits = output.float()
        if self.weights is None:
            loss = self.task.loss(output, y)
        else:
            w = self.weights.to(logits.device)[g, y]
            smoothing = float(getattr(self.task, "label_smoothing", 0.0))
            per_example = F.cross_entropy(logits, y, reduction="none", label_smoothing=smoothing)
            loss = (per_example * w).sum() / w.sum().clamp_min(1e-12)
        if self.constraint is not None:
            loss = loss + self.constraint.penalty(logits.softmax(1), y, g).to(loss.dtype)
        return loss

    def evaluation(self) -> Evaluation:
        return _GroupedEvaluation(self.task.evaluation(), self.gap)

    def for_test(self) -> Any:
        """The run's own task scores the test split (``recipe.final_task``)."""
        for_test = getattr(self.task, "for_test", None)
        return for_test() if callable(for_test) else self.task


def _grouped(target: torch.Tensor) -> bool:
    return target.ndim == 2 and target.shape[1] == 2 and not target.is_floating_point()


class _GroupedEvaluation:
    """The task's evaluation on the labels, plus the fairness gap when the targets carry groups."""

    def __init__(self, inner: Evaluation, gap: str) -> None:
        self.inner = inner
        self.gap = gap
        self.preds: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.groups: list[torch.Tensor] = []

    def update(self, output: torch.Tensor, target: torch.Tensor, loss: torch.Tensor) -> None:
        if _grouped(target):
            self.preds.append(output.argmax(1).cpu())
            self.labels.append(target[:, 0].cpu())
            self.groups.append(target[:, 1].cpu())
            target = target[:, 0]
        self.inner.update(output, target, loss)

    def compute(self) -> dict[str, float]:
        metrics = self.inner.compute()
        if self.preds:
            from ember.responsible.fairness import gap

            pred, y, g = (torch.cat(x).numpy() for x in (self.preds, self.labels, self.groups))
            kind = "equalized_odds" if self.gap.startswith("eo") else "demographic_parity"
            value = gap(pred, g, y, kind=kind)
            metrics[self.gap] = value if math.isfinite(value) else float("nan")
        return metrics


__all__ = [
    "CONSTRAINTS",
    "ExponentiatedGradient",
    "FairnessTask",
    "balanced_sample",
    "reweighing",
    "with_groups",
]
