"""Start from data alone: look at a file or folder, say what is there, and write a config that trains on it.

`survey` reads a table (CSV, TSV, Parquet), a JSONL file of texts, or a folder of class subfolders
(images or .txt files) and reports rows, columns and their kinds, missing values, classes and their
balance, and image sizes. `starter_config` turns a survey into a config: a table model for tables,
a small CNN for images, a small transformer encoder for texts. ``ember init DATA`` prints the one and
writes the other; ``ember train DATA --target COL`` does both and trains.

Example:
    >>> found = survey("houses.csv", target="price")  # doctest: +SKIP
    >>> print("\\n".join(found.lines()))  # doctest: +SKIP
    >>> config = starter_config(found)  # doctest: +SKIP
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ember.config import ConfigError
from ember.data.bundle import DataError, existing_path
from ember.data.image_folder import IMAGE_SUFFIXES
from ember.data.table import Table, read_table
from ember.data.tabular import RowEncoder
from ember.data.text_classes import read_labelled_texts

__all__ = ["Survey", "starter_config", "starter_yaml", "survey"]

TABLE_SUFFIXES = {".csv", ".tsv", ".txt", ".parquet", ".pq"}
TEXT_SUFFIXES = {".jsonl", ".ndjson"}
TARGET_NAMES = ("label", "target", "class", "y")
MANY_CLASSES = 20  # whole-number targets of more distinct values are read as regression (AutoGluon's rule)
FREE_TEXT_CHARS = 20  # a text column averaging this many characters is text to classify, not a category


@dataclass
class Survey:
    """What `survey` found in a file or folder.

    Attributes:
        path: the data.
        kind: ``table``, ``texts`` or ``images``.
        rows: examples found.
        task: ``classification`` or ``regression``.
        target: the label column (tables and text files), or None for folders.
        text: the text column of a table or JSONL file of texts.
        columns: table column → ``numeric`` / ``categorical`` / ``text`` / ``target``.
        missing: column → missing values.
        classes: class → examples (classification).
        target_range: (min, mean, max) of a regression target.
        image_sizes: (width, height, mode) → images.
        notes: what else to know (a guessed target, dropped columns).
    """

    path: Path
    kind: str
    rows: int
    task: str = "classification"
    target: str | None = None
    text: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)
    classes: dict[str, int] = field(default_factory=dict)
    target_range: tuple[float, float, float] | None = None
    image_sizes: dict[tuple[int, int, str], int] = field(default_factory=dict)
    text_chars: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The survey as lines for a terminal."""
        what = {"table": "a table", "texts": "labelled texts", "images": "labelled images"}[self.kind]
        out = [
            f"{self.path}: {what}, {self.rows} rows"
            + (f", {len(self.columns)} columns" if self.columns else "")
        ]
        width = max((len(c) for c in self.columns), default=0)
        for name, kind in self.columns.items():
            gaps = self.missing.get(name, 0)
            extra = f"  {gaps} missing ({gaps / max(self.rows, 1):.1%})" if gaps else ""
            out.append(f"  {name:{width}s}  {kind:11s}{extra}".rstrip())
        if self.image_sizes:
            sizes = ", ".join(f"{w}x{h} {mode} ({n})" for (w, h, mode), n in sorted(self.image_sizes.items()))
            out.append(f"image sizes: {sizes}")
        if self.text_chars:
            chars = np.asarray(self.text_chars)
            out.append(
                f"text length: median {int(np.median(chars))} characters, 95% under {int(np.quantile(chars, 0.95))}"
            )
        if self.task == "regression" and self.target_range is not None:
            lo, mean, hi = self.target_range
            out.append(f"target '{self.target}': regression, from {lo:g} to {hi:g} (mean {mean:.4g})")
        elif self.classes:
            total = sum(self.classes.values())
            shown = ", ".join(f"{c} {n} ({n / total:.1%})" for c, n in list(self.classes.items())[:12])
            more = f", ... {len(self.classes) - 12} more" if len(self.classes) > 12 else ""
            label = f"target '{self.target}'" if self.target else "classes (folders)"
            out.append(f"{label}: classification, {len(self.classes)} classes: {shown}{more}")
        out += [f"note: {note}" for note in self.notes]
        return out


def survey(path: str | Path, *, target: str | None = None, text: str | None = None) -> Survey:
    """Look at ``path`` (a table file, a JSONL file of texts, or a folder of class subfolders).

    Args:
        target: the label column of a file (default: one named label/target/class/y, else the last).
        text: the text column, for a table of texts (found by itself when one column is long text).
    """
    root = existing_path(path, "data")
    if root.is_dir():
        return _survey_folder(root)
    suffix = root.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return _survey_texts(root, target=target or "label", text=text or "text")
    if suffix not in TABLE_SUFFIXES:
        raise DataError(
            f"{root}: ember reads tables (.csv, .tsv, .parquet), texts (.jsonl) and folders of class "
            f"subfolders (images or .txt); got a '{suffix}' file"
        )
    table = read_table(root)
    notes: list[str] = []
    if target is None:
        named = [c for c in table.names if c.lower() in TARGET_NAMES]
        target = named[0] if named else table.names[-1]
        notes.append(
            f"the target is '{target}' ({'by its name' if named else 'the last column'}); pass --target COL to choose"
        )
    table.column(target, "target column")
    text = text or _text_column(table, target)
    if text is not None:
        found = _survey_texts(root, target=target, text=text)
        found.notes = notes + found.notes
        return found
    return _survey_table(root, table, target, notes)


def _text_column(table: Table, target: str) -> str | None:
    """The one long-text column of a table whose other columns are only the target, or None."""
    others = [c for c in table.names if c != target]
    if len(others) != 1 or table.kinds()[others[0]] != "categorical":
        return None
    lengths = [len(v) for v in table.columns[others[0]] if v is not None]
    return others[0] if lengths and np.mean(lengths) >= FREE_TEXT_CHARS else None


def _survey_table(root: Path, table: Table, target: str, notes: list[str]) -> Survey:
    from ember.data.csv_table import TableRows, table_bundle

    bundle = table_bundle(table, target=target)
    many = len(bundle.classes or ())
    if bundle.task == "classification" and table.columns[target].dtype == np.float64 and many > MANY_CLASSES:
        bundle = table_bundle(table, target=target, task="regression")
        notes.append(
            f"'{target}' holds {many} distinct whole numbers: read as regression "
            "(set data.task: classification for classes)"
        )
    rows = bundle.train
    assert isinstance(rows, TableRows)
    found = Survey(root, "table", len(table), task=bundle.task, target=target, notes=notes)
    found.columns = {c: k for c, k in table.kinds().items()}
    found.columns[target] = "target"
    found.missing = {c: n for c, n in table.missing().items() if n}
    y = rows.y.numpy()
    if bundle.task == "classification" and bundle.classes:
        counts = np.bincount(y, minlength=len(bundle.classes))
        found.classes = {c: int(n) for c, n in zip(bundle.classes, counts)}
    else:
        found.target_range = (float(y.min()), float(y.mean()), float(y.max()))
    if len(rows) < len(table):
        found.notes.append(f"{len(table) - len(rows)} rows without a target are left out")
    for name, why in RowEncoder.fit(table, target=target).dropped.items():
        found.columns[name] = "dropped"
        found.notes.append(f"'{name}' is left out: {why}")
    return found


def _survey_texts(root: Path, *, target: str, text: str) -> Survey:
    texts, labels = read_labelled_texts(root, text=text, target=target)
    found = Survey(root, "texts", len(texts), target=target, text=text)
    found.classes = dict(sorted(Counter(labels).items()))
    found.text_chars = [len(t) for t in texts]
    return found


def _survey_folder(root: Path) -> Survey:
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(
            f"{root} has no class subfolders; expected e.g. {root}/cat/1.png or {root}/spam/1.txt"
        )
    files = {
        d.name: sorted(p for p in d.rglob("*") if p.is_file() and not p.name.startswith(".")) for d in classes
    }
    suffixes = Counter(p.suffix.lower() for fs in files.values() for p in fs)
    images = sum(n for s, n in suffixes.items() if s in IMAGE_SUFFIXES)
    if images and images >= suffixes.get(".txt", 0):
        from PIL import Image

        found = Survey(root, "images", images)
        for name, fs in files.items():
            found.classes[name] = sum(p.suffix.lower() in IMAGE_SUFFIXES for p in fs)
            for p in fs:
                if p.suffix.lower() in IMAGE_SUFFIXES:
                    with Image.open(p) as image:  # the header only
                        key = (image.width, image.height, image.mode)
                    found.image_sizes[key] = found.image_sizes.get(key, 0) + 1
        return found
    if suffixes.get(".txt"):
        found = _survey_texts(root, target="label", text="text")
        found.target = None  # the classes are the folders
        return found
    raise DataError(f"the class subfolders of {root} hold neither images nor .txt files")


def starter_config(found: Survey) -> dict[str, Any]:
    """A config (as a dict) that trains a sensible first model on what `survey` found."""
    stop = {"early_stopping_metric": "val/loss", "early_stopping_patience": 5}
    optim = {"name": "adamw", "lr": 0.001, "weight_decay": 0.01}
    schedule = {"name": "cosine", "warmup": 0.05}
    path = str(found.path)
    if found.kind == "table":
        data: dict[str, Any] = {
            "name": "parquet" if found.path.suffix.lower() in (".parquet", ".pq") else "csv",
            "path": path,
            "target": found.target,
        }
        if found.task == "regression":
            data["task"] = "regression"
        data["batch_size"] = 256 if found.rows >= 5000 else 64
        model: dict[str, Any] = {"name": "tabular_mlp"}
        epochs = 20 if found.rows >= 5000 else 50
    elif found.kind == "images":
        data = {"name": "image-folder", "path": path, "batch_size": 64}
        sizes = {(w, h) for w, h, _ in found.image_sizes}
        side = max(min(min(w, h) for w, h in sizes), 8)
        if len(sizes) > 1 or side > 64:
            data["image_size"] = min(side, 64)
        if all(mode in ("L", "1", "I;16") for _, _, mode in found.image_sizes):
            data["grayscale"] = True
        model = {"name": "cnn"}
        epochs = 30
    else:
        data = {"name": "text-classes", "path": path, "batch_size": 32}
        if not found.path.is_dir():
            data.update(text=found.text, target=found.target)
        p95 = int(np.quantile(found.text_chars, 0.95)) + 1 if found.text_chars else 128
        data["max_len"] = int(min(256, max(16, 2 ** int(np.ceil(np.log2(p95))))))
        model = {
            "name": "transformer_encoder"
        }  # no family-specific keys: model.name=rnn_classifier works too
        epochs = 20
    return {
        "name": found.path.stem,
        "data": data,
        "model": model,
        "task": {"name": found.task},
        "optim": optim,
        "schedule": schedule,
        "trainer": {"epochs": epochs, **stop},
    }


def starter_yaml(found: Survey, config: dict[str, Any]) -> str:
    """The config as YAML under a comment that says where it came from and how to train it."""
    head = [f"# Written by `ember init {found.path}`: {found.lines()[0].split(': ', 1)[1]}."]
    head.append("# Edit freely; `ember train --help` lists every key. Train it with: ember train THIS_FILE")
    return "\n".join(head) + "\n" + yaml.safe_dump(config, sort_keys=False)


def check_target(found: Survey, target: str | None) -> None:
    """A folder's classes are its subfolders: ``--target`` means nothing there."""
    if target is not None and found.path.is_dir():
        raise ConfigError(
            f"--target names a column, but {found.path} is a folder whose subfolders are the classes"
        )
