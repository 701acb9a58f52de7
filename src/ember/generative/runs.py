"""A finished run as the generative commands need it: its task (built from the stored config, no
data loaded) and, when asked, its model and data.

What a command does with a run depends on what the run's task can do — ``sample`` (images),
``caption`` (image to text) — never on the family's name.

Example:
    >>> import tempfile
    >>> from ember.recipe import train
    >>> result = train({"data": {"name": "digits"}, "model": {"name": "vae_tiny", "image_size": 8},
    ...                 "task": {"name": "autoencoder", "iwae_samples": 0}, "trainer": {"epochs": 1}},
    ...                runs_dir=(runs := tempfile.mkdtemp()), progress=False)
    >>> task, record = task_of(result.run_id, runs_dir=runs)
    >>> callable(getattr(task, "sample", None)), callable(getattr(task, "caption", None))
    (True, False)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ember import tasks
from ember.config import load_config
from ember.track import RunStore
from ember.track.runs import RunRecord

__all__ = ["Loaded", "load", "parse_class", "task_of"]


def task_of(ref: str, *, runs_dir: str | Path | None = None) -> tuple[Any, RunRecord]:
    """The task of run ``ref`` (built from its config alone) and the run's record."""
    import yaml

    record = RunStore(runs_dir).get(ref)
    cfg = load_config(yaml.safe_load(record.config) or {})
    return tasks.create(cfg.task.name, **cfg.task.options), record


@dataclass
class Loaded:
    """A run's model (final weights, eval mode, on ``device``), task, data and record.

    ``run`` is the `ember.recipe.LoadedRun` (its splits, classes and spec, for a Python run too);
    ``prep`` the recipe's rebuilt data (None for a run trained from Python).
    """

    model: nn.Module
    task: Any
    prep: Any
    record: RunRecord
    device: torch.device
    run: Any = None

    def held_out(self) -> Any:
        """The test split, or the validation split when the run has no test split."""
        have = self.run.available_splits()
        return self.run.split("test" if "test" in have else "val")


def load(ref: str, *, runs_dir: str | Path | None = None, device: str = "auto") -> Loaded:
    """Rebuild run ``ref``: its model, task and data (`ember.recipe.load_run`)."""
    from ember.recipe import load_run
    from ember.train.precision import resolve_device

    run = load_run(ref, runs_dir=runs_dir)
    where = resolve_device(device)
    model = run.model.to(where).eval()
    return Loaded(model, run.task, run.prepared, run.record, where, run)


def parse_class(value: str, classes: list[str] | None) -> int:
    """A class given as its id (``7``) or its name (``"ankle boot"``, any case)."""
    names = [c.lower() for c in classes or []]
    if value.strip().lower() in names:
        return names.index(value.strip().lower())
    try:
        label = int(value)
    except ValueError:
        listed = ", ".join(classes or []) or "none"
        raise ValueError(
            f"class '{value}' is neither a class id nor a class name; the classes: {listed}"
        ) from None
    if classes is not None and not 0 <= label < len(classes):
        raise ValueError(f"class {label} is out of range: this data has classes 0..{len(classes) - 1}")
    return label
