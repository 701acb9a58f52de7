"""Small text helpers shared by the CLI files: tables and number formatting."""

from __future__ import annotations

import math
from collections.abc import Sequence


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain left-aligned text table."""
    cells = [[str(h) for h in headers]] + [[fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"
    return str(value)


def metrics_block(metrics: dict[str, float], *, skip_prefix: str = "accuracy/class_") -> str:
    """``name  value`` lines, per-class entries folded away."""
    keys = [k for k in metrics if skip_prefix not in k]
    width = max((len(k) for k in keys), default=0)
    return "\n".join(f"  {k.ljust(width)}  {fmt(metrics[k])}" for k in keys)
