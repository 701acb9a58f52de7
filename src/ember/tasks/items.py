"""What a task shows in a run's report: a few generic kinds of item, rendered without knowing the family.

A task's ``report_items`` (see `ember.tasks.contract.report_items`) returns a list of these; the
report (`ember.evaluate.report`) draws each in its section, in order. Each kind names the section it
belongs to by default (``section``); an item's ``heading`` (when given) titles that section.

========================= ====================================== ===================================
kind                      what it holds                          drawn as
========================= ====================================== ===================================
:class:`Confusion`        (K, K) counts, truth x prediction      a confusion matrix, and per class
                                                                 precision, recall, F1 (and IoU)
:class:`Calibration`      class scores (N, K) and targets (N,)   a reliability diagram with ECE
:class:`Scatter`          paired values x, y                     points against the diagonal
:class:`ImageGrid`        (C, H, W) images in [0, 1], captions   one captioned mosaic
:class:`Table`            headers and rows of text and numbers   a table (long text wraps)
========================= ====================================== ===================================

Example:
    >>> item = Confusion(np.array([[3, 1], [0, 2]]), ["cat", "dog"])
    >>> item.section, item.per_class_section
    ('confusion', 'per-class')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class Confusion:
    """Counts of truth (rows) against prediction (columns), with the per-class figures they give."""

    matrix: np.ndarray
    """(K, K) counts."""
    classes: Sequence[str]
    """Name of each class, in index order."""
    unit: str = "examples"
    """What is counted (examples, pixels ...)."""
    iou: bool = False
    """Also give each class's intersection over union (segmentation)."""
    note: str = ""
    section: str = "confusion"
    per_class_section: str = "per-class"
    heading: str = ""


@dataclass(frozen=True)
class Calibration:
    """Top-1 confidence against accuracy of class scores."""

    scores: torch.Tensor
    """(N, K) logits (or log-probabilities)."""
    target: torch.Tensor
    """(N,) class ids."""
    section: str = "calibration"
    heading: str = ""


@dataclass(frozen=True)
class Scatter:
    """Paired values, e.g. predictions against truth, drawn against the diagonal ``y = x``."""

    x: np.ndarray
    y: np.ndarray
    title: str
    xlabel: str
    ylabel: str
    note: str = ""
    section: str = "confusion"
    heading: str = ""


@dataclass(frozen=True)
class ImageGrid:
    """Images with a caption each (the worst mistakes, say)."""

    images: Sequence[np.ndarray]
    """(C, H, W) arrays with values in [0, 1], C = 1 or 3."""
    captions: Sequence[str]
    title: str
    section: str = "mistakes"
    heading: str = ""


@dataclass(frozen=True)
class Table:
    """Rows of cells (text, numbers) under headers; a note before it says what the rows are."""

    headers: Sequence[str]
    rows: Sequence[Sequence[Any]]
    note: str = ""
    section: str = "mistakes"
    heading: str = ""
    numeric: Sequence[int] = field(default_factory=tuple)
    """Indices of the columns aligned as numbers."""


ReportItem = Confusion | Calibration | Scatter | ImageGrid | Table


def examples(
    data: Any,
    kind: str,
    indices: Sequence[int],
    *,
    captions: Sequence[str],
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    note: str,
    numeric: Sequence[int] = (),
) -> list[ReportItem]:
    """Chosen examples of the evaluated ``data`` (the worst mistakes, say) as items: their images and
    the table of ``rows`` when the inputs (of ``kind``, `ember.tasks.spec.InputSpec`) are images, else
    the table with each input's first values (none when ``data`` cannot be indexed, a loader say)."""
    inputs = [data[int(i)][0] for i in indices] if hasattr(data, "__getitem__") else None
    if inputs and kind == "image":
        grid = ImageGrid([torch.as_tensor(x).float().numpy() for x in inputs], captions, title=note)
        return [grid, Table(headers, rows, note=note, numeric=numeric)]
    if inputs:
        headers, rows = [*headers, "input (first values)"], [[*r, short(x)] for r, x in zip(rows, inputs)]
    return [Table(headers, rows, note=note, numeric=numeric)]


def short(values: Any, limit: int = 8) -> str:
    """The first ``limit`` values of a tensor or array as text (a table cell)."""
    flat = torch.as_tensor(values).flatten().tolist()
    text = ", ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in flat[:limit])
    return text + (", ..." if len(flat) > limit else "")


__all__ = ["Calibration", "Confusion", "ImageGrid", "ReportItem", "Scatter", "Table", "examples", "short"]
