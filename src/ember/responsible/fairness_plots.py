"""Fairness figures as PNG bytes: per-group rates with their intervals (matplotlib's object API)."""

from __future__ import annotations

import numpy as np

from ember.evaluate.report_plots import PALETTE, _figure, _png
from ember.responsible.fairness import GroupAudit

SHOWN = ("accuracy", "selection_rate", "tpr", "fpr")


def group_bars(report: GroupAudit, *, metrics: tuple[str, ...] = SHOWN) -> bytes:
    """One panel per metric: a bar per group with its bootstrap interval as an error bar.

    k-class audits show the worst class's metric of each kind (``selection_rate/<class>`` with the
    largest spread across groups).
    """
    names = [n for n in (_pick(report, m) for m in metrics) if n is not None]
    fig = _figure(2.6 * len(names) + 0.6, 2.9)
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    x = np.arange(len(report.groups))
    for ax, name in zip(axes, names):
        cis = [report.by_group[g][name] for g in report.groups]
        values = np.array([c.value for c in cis])
        low = np.nan_to_num(values - np.array([c.low for c in cis]))
        high = np.nan_to_num(np.array([c.high for c in cis]) - values)
        ax.bar(x, values, color=[PALETTE[i % len(PALETTE)] for i in range(len(x))], alpha=0.85)
        ax.errorbar(x, values, yerr=[low, high], fmt="none", ecolor="black", capsize=3, lw=1)
        ax.set_xticks(
            x, report.groups, rotation=30 if len(x) > 3 else 0, ha="right" if len(x) > 3 else "center"
        )
        ax.set_ylim(0, 1)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=8)
    dp = report.gaps["demographic_parity_difference"]
    fig.suptitle(f"{report.attribute}: demographic-parity difference {dp}", fontsize=9)
    return _png(fig)


def tradeoff(points: dict[str, tuple[float, float]]) -> bytes:
    """Accuracy against demographic-parity difference, one labelled point per model or mitigation."""
    fig = _figure(4.8, 3.4)
    ax = fig.add_subplot()
    for i, (label, (gap, acc)) in enumerate(points.items()):
        ax.scatter([gap], [acc], color=PALETTE[i % len(PALETTE)], label=label, s=36)
    ax.set_xlabel("demographic-parity difference")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)


def _pick(report: GroupAudit, metric: str) -> str | None:
    first = report.by_group[report.groups[0]]
    if metric in first:
        return metric
    keys = [k for k in first if k.startswith(f"{metric}/")]
    if not keys:
        return None

    def spread(key: str) -> float:
        values = [report.by_group[g][key].value for g in report.groups]
        return float(np.nanmax(values) - np.nanmin(values)) if values else 0.0

    return max(keys, key=spread)


__all__ = ["group_bars", "tradeoff"]
