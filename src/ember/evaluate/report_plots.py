"""The report's figures as PNG bytes, drawn with matplotlib's object API (no pyplot, no global backend).

Every function takes plain numbers and returns the bytes of one PNG, which the report embeds as
base64; none of them needs a display.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ember._io import require

DPI = 110
PALETTE = ["#2f6db5", "#d9822b", "#3a9a5b", "#c23b3b", "#7b5ea7", "#8c6d31", "#d4639a", "#5c5c5c"]


def _figure(width: float, height: float) -> Any:
    Figure = require("matplotlib.figure", "plots", what="ember report").Figure
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def curves(
    series: Mapping[str, Sequence[tuple[float, float]]], *, title: str, ylabel: str, log_y: bool = False
) -> bytes:
    """Lines of ``(step, value)`` points, one per name; a single point is drawn as a marker."""
    fig = _figure(6.4, 3.4)
    ax = fig.add_subplot()
    for i, (name, points) in enumerate(series.items()):
        if not points:
            continue
        x, y = zip(*points)
        ax.plot(
            x, y, label=name, color=PALETTE[i % len(PALETTE)], marker="o" if len(points) < 20 else None, ms=3
        )
    ax.set(title=title, xlabel="optimizer step", ylabel=ylabel)
    values = [v for pts in series.values() for _, v in pts]
    if log_y and values and min(values) > 0 and max(values) / min(values) > 20:  # log only when it helps
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if series:
        ax.legend(loc="best", fontsize=8)
    return _png(fig)


def confusion(matrix: np.ndarray, classes: Sequence[str]) -> bytes:
    """Row-normalized confusion matrix (true class per row) with the counts written in each cell."""
    m = np.asarray(matrix, dtype=np.float64)
    k = len(m)
    rows = m.sum(axis=1, keepdims=True)
    share = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    side = min(9.0, 2.5 + 0.45 * k)
    fig = _figure(side + 1.2, side)
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    ticks = np.arange(k)
    labels = [str(c)[:14] for c in classes]
    tilt = k > 4 and max(len(x) for x in labels) > 2
    ax.set_xticks(ticks, labels, rotation=45 if tilt else 0, ha="right" if tilt else "center", fontsize=8)
    ax.set_yticks(ticks, labels, fontsize=8)
    ax.set(xlabel="predicted class", ylabel="true class", title="Confusion matrix")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if m[i, j]:
                    ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=7,
                            color="white" if share[i, j] > 0.5 else "black")  # fmt: skip
    return _png(fig)


def reliability(
    edges: np.ndarray, confidence: np.ndarray, accuracy: np.ndarray, count: np.ndarray, *, ece: float
) -> bytes:
    """Reliability diagram: accuracy per confidence bin against the diagonal, with the bin counts below."""
    fig = _figure(5.2, 5.2)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    width = np.diff(edges)
    centers = edges[:-1] + width / 2
    filled = count > 0
    top.bar(centers[filled], np.nan_to_num(accuracy[filled]), width=width[filled], color=PALETTE[0], alpha=0.8,
            edgecolor="white", label="accuracy in bin")  # fmt: skip
    top.plot([0, 1], [0, 1], "--", color="#555555", label="perfect calibration")
    top.plot(confidence[filled], accuracy[filled], "o", color=PALETTE[1], ms=3, label="mean confidence")
    top.set(ylim=(0, 1), ylabel="accuracy", title=f"Reliability diagram (ECE {ece:.4f})")
    top.legend(loc="best", fontsize=8)
    top.grid(alpha=0.3)
    bottom.bar(centers, count, width=width, color="#888888", edgecolor="white")
    bottom.set(xlim=(0, 1), xlabel="top-1 confidence", ylabel="examples")
    return _png(fig)


def intervals(rows: Sequence[tuple[str, float, float, float]], *, title: str, xlabel: str) -> bytes:
    """A forest plot: one ``(label, value, low, high)`` row per line, the interval as a bar."""
    fig = _figure(6.4, 0.9 + 0.45 * len(rows))
    ax = fig.add_subplot()
    for i, (_, value, low, high) in enumerate(rows):
        y = len(rows) - 1 - i
        color = PALETTE[i % len(PALETTE)]
        ax.plot([low, high], [y, y], color=color, lw=3, solid_capstyle="round")
        ax.plot([value], [y], "o", color="black", ms=5)
    ax.set_yticks(range(len(rows)), [r[0] for r in reversed(rows)], fontsize=9)
    ax.set(title=title, xlabel=xlabel)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def bars(values: Mapping[str, Sequence[float]], labels: Sequence[str], *, title: str, ylabel: str) -> bytes:
    """Grouped bars: one group per label, one bar per name in ``values``."""
    k = len(labels)
    fig = _figure(min(12.0, 3.0 + 0.5 * k), 3.4)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(values))
    for i, (name, ys) in enumerate(values.items()):
        ax.bar(np.arange(k) + (i - (len(values) - 1) / 2) * width, ys, width=width, label=name,
               color=PALETTE[i % len(PALETTE)])  # fmt: skip
    names = [str(x)[:14] for x in labels]
    tilt = k > 6 and max(len(x) for x in names) > 2
    ax.set_xticks(
        np.arange(k), names, rotation=45 if tilt else 0, ha="right" if tilt else "center", fontsize=8
    )
    ax.set(title=title, ylabel=ylabel, ylim=(0, 1.05))
    ax.legend(fontsize=8, ncols=len(values))
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def scatter(x: np.ndarray, y: np.ndarray, *, title: str, xlabel: str, ylabel: str) -> bytes:
    """Points ``(x, y)`` with the diagonal ``y = x`` for reference."""
    fig = _figure(4.8, 4.4)
    ax = fig.add_subplot()
    ax.scatter(x, y, s=8, alpha=0.6, color=PALETTE[0], edgecolors="none")
    lo, hi = float(min(np.min(x), np.min(y))), float(max(np.max(x), np.max(y)))
    ax.plot([lo, hi], [lo, hi], "--", color="#555555", lw=1)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    return _png(fig)


def image_grid(images: Sequence[np.ndarray], captions: Sequence[str], *, title: str) -> bytes:
    """Images ``(C, H, W)`` in [0, 1] (C = 1 or 3) in a grid, each with its caption.

    The grid is one mosaic in one axes (a dozen subplots would cost seconds to lay out).
    """
    tiles = []
    for img in images:
        a = np.clip(np.asarray(img, dtype=np.float64), 0, 1)
        a = np.repeat(a, 3, axis=0) if a.shape[0] == 1 else a[:3]
        tiles.append(np.transpose(a, (1, 2, 0)))
    h = max(t.shape[0] for t in tiles)
    w = max(t.shape[1] for t in tiles)
    cols = min(6, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    pad_top, pad = max(2, h // 2), max(1, h // 8)  # room for two caption lines above each tile
    cell_h, cell_w = h + pad_top + pad, w + 2 * pad
    mosaic = np.ones((rows * cell_h, cols * cell_w, 3))
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        top, left = r * cell_h + pad_top, c * cell_w + pad
        mosaic[top : top + tile.shape[0], left : left + tile.shape[1]] = tile
    fig = _figure(1.9 * cols, 2.3 * rows + 0.4)
    ax = fig.add_subplot()
    ax.imshow(mosaic, interpolation="nearest")
    for i, caption in enumerate(captions):
        r, c = divmod(i, cols)
        ax.text(
            c * cell_w + cell_w / 2, r * cell_h + pad_top - 0.6, caption, ha="center", va="bottom", fontsize=7
        )
    ax.set_title(title, fontsize=10)
    ax.axis("off")
    return _png(fig)


__all__ = ["bars", "confusion", "curves", "image_grid", "intervals", "reliability", "scatter"]
