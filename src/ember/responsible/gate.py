"""The release gate: a YAML policy of thresholds, checked against a run before it is promoted.

A policy (every key optional; an unknown key is an error that names it)::

    split: test
    min_ci_low: {accuracy: 0.90}          # the metric's bootstrap interval must start at or above
    min_baseline_margin: {accuracy: 0.05} # the model beats every baseline by at least this (point value)
    max_fairness_gap: {demographic_parity_difference: 0.05}  # over every audited attribute
    max_ece: 0.05                         # expected calibration error on the split
    max_epsilon: 8.0                      # the run's differential-privacy ε
    max_p99_latency_ms: 50                # one call at latency_batch, measured now (or read from --plan)
    latency_batch: 1
    max_finding_severity: warning         # no finding of `ember check` above this (error fails)

:func:`evaluate_gate` returns one :class:`Rule` per threshold: what was measured, the limit, and
whether it passed. A rule whose evidence is missing (no fairness audit saved, no ε recorded) fails
and says which command provides it. ``ember gate RUN --policy gate.yaml`` prints the table and
exits 1 when any rule fails; run it before ``ember registry promote``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ember.config import ConfigError, from_dict

SEVERITY = {"info": 0, "warning": 1, "error": 2}


@dataclass(frozen=True)
class Policy:
    """A release policy (see the module docstring)."""

    split: str = "test"
    """The split the metrics are read on."""
    min_ci_low: dict[str, float] = field(default_factory=dict)
    """metric → the lowest allowed lower end of its bootstrap interval."""
    min_baseline_margin: dict[str, float] = field(default_factory=dict)
    """metric → the smallest allowed margin of the model over every baseline."""
    max_fairness_gap: dict[str, float] = field(default_factory=dict)
    """gap (e.g. demographic_parity_difference) → its largest allowed value over the audited attributes."""
    max_ece: float | None = None
    """Largest allowed expected calibration error."""
    max_epsilon: float | None = None
    """Largest allowed differential-privacy ε."""
    max_p99_latency_ms: float | None = None
    """Largest allowed p99 latency of one call, in milliseconds."""
    latency_batch: int = 1
    """Batch size of the latency measurement."""
    max_finding_severity: Literal["info", "warning", "error", ""] = ""
    """Most severe `ember check` finding allowed ('' : checks are not run)."""
    resamples: int = 1000
    """Bootstrap resamples behind the intervals."""


def load_policy(path: str | Path) -> Policy:
    """Read and check a policy file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"policy file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    return from_dict(Policy, raw, "")


@dataclass
class Rule:
    """One threshold of the policy and what the run showed."""

    name: str
    measured: float | None
    limit: float
    passed: bool
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.name,
            "measured": self.measured,
            "limit": self.limit,
            "passed": self.passed,
            "note": self.note,
        }


def _at_least(name: str, value: float | None, limit: float, note: str = "") -> Rule:
    ok = value is not None and not math.isnan(value) and value >= limit
    return Rule(name, value, limit, ok, note)


def _at_most(name: str, value: float | None, limit: float, note: str = "") -> Rule:
    ok = value is not None and not math.isnan(value) and value <= limit
    return Rule(name, value, limit, ok, note)


def evaluate_gate(
    ref: str, policy: Policy, *, runs_dir: str | Path | None = None, plan: str | Path | None = None
) -> list[Rule]:
    """Every rule of ``policy`` checked against run ``ref`` (see the module docstring)."""
    from ember.track import RunStore

    record = RunStore(runs_dir).get(ref)
    rules: list[Rule] = []
    needs_card = policy.min_ci_low or policy.min_baseline_margin or policy.max_ece is not None
    if needs_card:
        rules += _metric_rules(record.id, policy, runs_dir)
    for gap, limit in policy.max_fairness_gap.items():
        rules.append(_fairness_rule(record.folder, gap, limit))
    if policy.max_epsilon is not None:
        rules.append(_epsilon_rule(record, policy.max_epsilon))
    if policy.max_p99_latency_ms is not None:
        rules.append(_latency_rule(record.id, policy, runs_dir, plan))
    if policy.max_finding_severity:
        from ember.evaluate.checks import run_checks

        findings = run_checks(record.id, runs_dir=runs_dir)
        worst = max(findings, key=lambda f: SEVERITY[f.severity], default=None)
        level = SEVERITY[worst.severity] if worst is not None else 0
        allowed = SEVERITY[policy.max_finding_severity]
        note = (
            f"{worst.severity} {worst.name}: {worst.message}" if worst is not None and level > allowed else ""
        )
        rules.append(
            Rule(
                f"check findings <= {policy.max_finding_severity}",
                float(level),
                float(allowed),
                level <= allowed,
                note,
            )
        )
    return rules


def _metric_rules(run_id: str, policy: Policy, runs_dir: str | Path | None) -> list[Rule]:
    from ember.evaluate import run_predictions, scorecard

    card = scorecard(run_predictions(run_id, policy.split, runs_dir=runs_dir), n_resamples=policy.resamples)
    rules = []
    for metric, limit in policy.min_ci_low.items():
        ci = card.intervals.get(metric)
        note = "" if ci is not None else f"no metric '{metric}'; the run has: {', '.join(card.intervals)}"
        rules.append(_at_least(f"{metric} CI low", ci.low if ci is not None else None, limit, note))
    for metric, limit in policy.min_baseline_margin.items():
        margins = []
        for b in card.baselines:
            value = b.intervals.get(metric)
            model = card.intervals.get(metric)
            if value is not None and model is not None:
                sign = -1.0 if metric == card.headline and card.mode == "min" else 1.0  # lower is better
                margins.append((sign * (model.value - value.value), b.name))
        worst = min(margins, default=None)
        note = f"closest baseline: {worst[1]}" if worst else "no baseline scored this metric"
        rules.append(_at_least(f"{metric} margin over baselines", worst[0] if worst else None, limit, note))
    if policy.max_ece is not None:
        ece = card.intervals.get("ece")
        rules.append(_at_most("ECE", ece.value if ece is not None else None, policy.max_ece,
                              "" if ece is not None else "the task reports no ECE"))  # fmt: skip
    return rules


def _fairness_rule(folder: Path, gap: str, limit: float) -> Rule:
    from ember.responsible.fairness_run import load_fairness

    saved = load_fairness(folder)
    if saved is None:
        return Rule(
            f"max {gap}",
            None,
            limit,
            False,
            "no fairness audit saved: run `ember audit fairness RUN --sensitive ...`",
        )
    values = [a["gaps"][gap]["value"] for a in saved["audits"] if gap in a["gaps"]]
    if not values:
        return Rule(f"max {gap}", None, limit, False, f"the saved audit has no '{gap}'")
    worst = max(zip(values, (a["attribute"] for a in saved["audits"])))
    return _at_most(f"max {gap}", worst[0], limit, f"worst: {worst[1]}")


def _epsilon_rule(record: Any, limit: float) -> Rule:
    path = record.folder / "privacy.json"
    saved = json.loads(path.read_text()) if path.is_file() else {}
    summary = record.summary or {}
    eps = saved.get("epsilon", summary.get("epsilon", summary.get("privacy/epsilon")))
    note = "" if eps is not None else "the run records no ε (it was not trained with differential privacy)"
    return _at_most("privacy ε", float(eps) if eps is not None else None, limit, note)


def _latency_rule(run_id: str, policy: Policy, runs_dir: str | Path | None, plan: str | Path | None) -> Rule:
    limit = float(policy.max_p99_latency_ms)  # type: ignore[arg-type]
    if plan is not None:
        saved = json.loads(Path(plan).read_text())
        return _at_most("p99 latency (ms)", float(saved["p99_ms"]), limit, f"from {plan}")
    import torch

    from ember.deploy.bench import measure
    from ember.recipe import load_run

    loaded = load_run(run_id, runs_dir=runs_dir)
    data = loaded.split(policy.split)
    rows = [data[i][0] for i in range(min(len(data), max(8, policy.latency_batch)))]
    example = torch.stack([torch.as_tensor(r) for r in rows])
    latency = measure({"model": loaded.model.eval()}, example, batch_sizes=(policy.latency_batch,), rounds=5)[
        0
    ]
    return _at_most(
        "p99 latency (ms)",
        latency.p99_ms,
        limit,
        f"measured now: batch {policy.latency_batch}, {latency.calls} calls",
    )


__all__ = ["Policy", "Rule", "evaluate_gate", "load_policy"]
