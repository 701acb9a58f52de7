"""Membership-inference audit of a trained run: how well can an attacker tell its training examples?

Two attacks, scored on ``n`` of the run's training examples (members) and ``n`` held-out ones
(non-members, from its test split, else validation):

- **loss threshold** (Yeom et al. 2018): members tend to have lower loss; the score is -loss;
- **likelihood ratio** (LiRA, Carlini et al. 2022, online, with fixed variances as the paper
  advises for few shadows): ``shadows`` models are trained with the run's own config on the rest
  of its training set plus a random half of the audited examples, so each audited example is in
  about half of them. Per example, the logit-scaled confidence φ = log p_y - log(1 - p_y) of the
  models that trained on it and of those that did not are fitted with Gaussians; the score is the
  target's φ log-likelihood ratio between the two.

Each reports ROC AUC and the true-positive rate at 0.1% and 1% false positives (the regime that
matters: an attacker confident about a few examples). A DP model bounds every attack: at ε the
TPR at FPR f is at most e^ε f + δ.

Shadow models cost one training run each (the run's whole config), trained in a scratch run
store. The audit is for classification runs on in-memory data; others are refused in one line.

Example:
    >>> import numpy as np
    >>> attack_metrics(np.array([0.9, 0.8, 0.3, 0.1]), np.array([1, 1, 0, 0]))["auc"]
    1.0
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ember.data import ArrayData, make_loader
from ember.recipe import load_run_model
from ember.responsible._fit import fit_on
from ember.train import predict
from ember.train.checkpoint import atomic_write_bytes

FPRS = (0.001, 0.01)


def attack_metrics(scores: np.ndarray, members: np.ndarray) -> dict[str, float]:
    """ROC AUC and TPR at each of :data:`FPRS` of a score that is higher for members."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(members, scores)
    out = {"auc": float(roc_auc_score(members, scores))}
    for f in FPRS:
        out[f"tpr@{f:g}"] = float(tpr[fpr <= f].max()) if (fpr <= f).any() else 0.0
    return out


def class_scores(
    model: nn.Module, data: ArrayData, *, batch_size: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Per-example cross-entropy loss and logit-scaled confidence φ of the true class."""
    logits = predict(
        model, make_loader(data, batch_size=batch_size, shuffle=False), device=torch.device("cpu")
    )
    logp = F.log_softmax(logits.double(), dim=1)
    y = data.y.long()
    own = logp.gather(1, y[:, None]).squeeze(1)
    rest = logp.scatter(1, y[:, None], -math.inf).logsumexp(1)  # log(1 - p_y), stably
    return (-own).numpy(), (own - rest).numpy()


def lira_scores(target: np.ndarray, shadow: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Online LiRA with fixed variances: ``target`` (N,) φ, ``shadow`` (K, N) φ, ``inside`` (K, N) bool."""

    def fit(mask: np.ndarray) -> tuple[np.ndarray, float]:
        count = mask.sum(0)
        mean = np.where(count > 0, (shadow * mask).sum(0) / np.maximum(count, 1), np.nan)
        mean = np.where(np.isnan(mean), np.nanmean(mean), mean)  # an example no shadow saw that way
        spread = (shadow - mean)[mask]
        return mean, float(spread.std()) if spread.size > 1 else 1.0

    mu_in, sd_in = fit(inside)
    mu_out, sd_out = fit(~inside)
    sd_in, sd_out = max(sd_in, 1e-3), max(sd_out, 1e-3)
    log_in = -0.5 * ((target - mu_in) / sd_in) ** 2 - math.log(sd_in)
    log_out = -0.5 * ((target - mu_out) / sd_out) ** 2 - math.log(sd_out)
    return log_in - log_out


@dataclass
class PrivacyAudit:
    """What ``ember audit privacy`` reports (and stores in the run as ``audit_privacy.json``)."""

    run_id: str
    members: int
    nonmembers: int
    shadows: int
    attacks: dict[str, dict[str, float]] = field(default_factory=dict)
    privacy: dict[str, float] = field(default_factory=dict)
    train_accuracy: float = math.nan
    heldout_accuracy: float = math.nan
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _concat(*parts: ArrayData) -> ArrayData:
    return ArrayData(torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts]))


def audit_run(
    ref: str,
    *,
    runs_dir: str | Path | None = None,
    n: int = 1000,
    shadows: int = 4,
    seed: int = 0,
    log: Any = None,
) -> PrivacyAudit:
    """Run the loss-threshold attack and (with ``shadows`` > 0) LiRA on run ``ref``; store the result.

    Raises:
        ValueError: the run is not a classification run on in-memory data, or has no held-out split.
    """
    started = time.perf_counter()
    prep, record = load_run_model(ref, runs_dir=runs_dir)
    heldout = prep.test if prep.test is not None else prep.val
    if not (isinstance(prep.train, ArrayData) and isinstance(heldout, ArrayData) and prep.bundle.num_classes):
        raise ValueError(
            f"run {record.id}: the membership audit scores class probabilities of in-memory examples; "
            f"this run's task is {prep.bundle.task} on {type(prep.train).__name__}"
        )
    rng = np.random.default_rng(seed)
    count = min(n, len(prep.train), len(heldout))
    member_idx = rng.choice(len(prep.train), count, replace=False)
    members = prep.train.subset(member_idx)
    nonmembers = heldout.subset(rng.choice(len(heldout), count, replace=False))
    population = _concat(members, nonmembers)
    is_member = np.r_[np.ones(count), np.zeros(count)].astype(bool)

    loss, phi = class_scores(prep.model, population)
    audit = PrivacyAudit(record.id, count, count, shadows)
    audit.attacks["loss"] = attack_metrics(-loss, is_member)
    predicted = predict(
        prep.model, make_loader(population, batch_size=512, shuffle=False), device=torch.device("cpu")
    )
    correct = (predicted.argmax(1) == population.y).numpy()
    audit.train_accuracy, audit.heldout_accuracy = (
        float(correct[is_member].mean()),
        float(correct[~is_member].mean()),
    )
    audit.privacy = {
        k.removeprefix("privacy/"): v for k, v in record.summary.items() if k.startswith("privacy/")
    }

    if shadows > 0:
        rest = prep.train.subset(np.setdiff1d(np.arange(len(prep.train)), member_idx))
        inside = np.zeros((shadows, 2 * count), dtype=bool)
        shadow_phi = np.zeros((shadows, 2 * count))
        with tempfile.TemporaryDirectory(prefix="ember-shadows-") as scratch:
            for k in range(shadows):
                inside[k] = rng.random(2 * count) < 0.5
                cfg = dataclasses.replace(
                    prep.config,
                    name=f"{prep.config.name}-shadow{k}",
                    trainer=dataclasses.replace(
                        prep.config.trainer, seed=prep.config.trainer.seed + 1000 + k
                    ),
                )
                data = _concat(rest, population.subset(np.flatnonzero(inside[k])))
                model, _ = fit_on(cfg, prep.bundle, data, runs_dir=scratch)
                shadow_phi[k] = class_scores(model, population)[1]
                if log is not None:
                    log(f"shadow {k + 1}/{shadows} trained on {len(data.y)} examples")
        audit.attacks["lira"] = attack_metrics(lira_scores(phi, shadow_phi, inside), is_member)
    audit.seconds = time.perf_counter() - started
    _store(audit, record.folder, runs_dir)
    return audit


def _store(audit: PrivacyAudit, folder: Path, runs_dir: str | Path | None) -> None:
    from ember.track import RunStore

    path = folder / "audit_privacy.json"
    atomic_write_bytes(path, json.dumps(audit.to_dict(), indent=1).encode())
    run = RunStore(runs_dir).open(audit.run_id)
    run.artifact(path, "audit")
    run.log(
        {
            f"audit/privacy/{name}/{k}": v
            for name, metrics in audit.attacks.items()
            for k, v in metrics.items()
        },
        step=0,
    )
    run.flush()


__all__ = ["FPRS", "PrivacyAudit", "attack_metrics", "audit_run", "class_scores", "lira_scores"]
