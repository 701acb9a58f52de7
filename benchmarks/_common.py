"""Helpers shared by the benchmarks: thread settings, robust statistics, plain-text tables.

Every benchmark compares variants that take turns in one process (round-robin, the order rotated
each round) and reports the median of per-round ratios, so load from other processes on a shared
machine moves numerator and denominator together instead of skewing one variant.
"""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing


def set_threads(threads: int) -> None:
    """Pin torch's intra-op pool (and OpenMP's, for anything started later) to ``threads``."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float]) -> str:
    """``min–max`` of ``values`` with two decimals, to show how much rounds disagreed."""
    return f"{min(values):.2f}-{max(values):.2f}"


def rotate(items: Sequence[str], k: int) -> list[str]:
    """``items`` rotated left by ``k`` (each round starts with a different variant)."""
    k %= len(items)
    return list(items[k:]) + list(items[:k])


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, columns padded so it also reads as plain text."""
    cols = [header, *rows]
    widths = [max(len(str(r[i])) for r in cols) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def machine() -> str:
    """One line naming the CPU, cores, torch version and current load, printed above every table."""
    cpu = "unknown CPU"
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                cpu = text.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ""
    if hasattr(os, "getloadavg"):
        load = ", load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    return f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}{load}"
