"""What a run keeps for the stages after training: its model spec and, for a Python run, its data.

A run made by the recipe can rebuild its data from its config and saved split indices. A run made
by :class:`~ember.train.Trainer` on a user's own tensors or dataset has no config to rebuild data
from, so it keeps the data itself:

==================================== =============================================================
``spec.json``                        the :class:`~ember.tasks.spec.ModelSpec` (every run)
``data/<split>.safetensors``         ``x`` and ``y`` of the ``train`` / ``val`` / ``test`` data given
                                     to ``fit`` and ``test`` (Python runs; up to ``limit`` bytes)
``data/<split>.json``                a split too large (or not tensors) to keep: its size and why
==================================== =============================================================

Every file is written atomically and recorded as a run artifact (sha256 checked on reading).

Example:
    >>> import tempfile, torch
    >>> from ember.track import RunStore
    >>> run = RunStore(tempfile.mkdtemp()).create("demo", config_yaml="{}", params={})
    >>> record_split(run, "test", (torch.rand(4, 3), torch.tensor([0, 1, 0, 1])))
    True
    >>> read_split(run.store, run.id, "test").x.shape
    torch.Size([4, 3])
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ember._io import atomic_write_bytes
from ember.data import ArrayData
from ember.tasks.spec import ModelSpec, SpecError
from ember.track import Run, RunStore

SPEC_FILE = "spec.json"
DATA_DIR = "data"
LIMIT = 64 << 20
"""Bytes up to which a split is kept in the run."""


class RecordError(ValueError):
    """A run's recorded file that is missing, damaged or does not match its recorded sha256."""


def write_spec(run: Run, spec: ModelSpec) -> None:
    """Save ``spec`` as the run's ``spec.json`` (artifact ``spec``)."""
    path = run.dir / SPEC_FILE
    atomic_write_bytes(path, (json.dumps(spec.to_dict(), indent=1) + "\n").encode())
    run.artifact(path, "spec")


def read_spec(store: RunStore, run_id: str) -> ModelSpec | None:
    """The run's recorded spec, verified; None when the run has none (runs made before specs)."""
    path = store.folder(run_id) / SPEC_FILE
    if not path.is_file():
        return None
    text = _verified(store, run_id, path)
    try:
        return ModelSpec.from_dict(json.loads(text))
    except (json.JSONDecodeError, SpecError) as e:
        raise RecordError(f"{path} cannot be read: {e}") from None


def record_split(run: Run, split: str, data: Any, *, limit: int = LIMIT) -> bool:
    """Keep ``data`` as the run's ``split`` when it is tensors (or a dataset of them) within ``limit``.

    Returns:
        True when saved; otherwise a small ``data/<split>.json`` says why (the stages then report it).
    """
    folder = run.dir / DATA_DIR
    folder.mkdir(parents=True, exist_ok=True)
    arrays, why = _as_tensors(data, limit)
    if arrays is None:
        note = folder / f"{split}.json"
        atomic_write_bytes(note, json.dumps({"saved": False, "why": why}).encode())
        return False
    path = folder / f"{split}.safetensors"
    atomic_write_bytes(path, save({"x": arrays.x.contiguous().cpu(), "y": arrays.y.contiguous().cpu()}))
    run.artifact(path, "data")
    (folder / f"{split}.json").unlink(missing_ok=True)
    return True


def recorded_splits(store: RunStore, run_id: str) -> dict[str, str]:
    """Split name → ``"saved"`` or the reason it was not, for the splits a Python run was given."""
    folder = store.folder(run_id) / DATA_DIR
    out: dict[str, str] = {}
    for file in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        out[file.stem] = "saved"
    for file in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if file.stem not in out:
            try:
                out[file.stem] = str(json.loads(file.read_text()).get("why", "not saved"))
            except (json.JSONDecodeError, OSError):
                out[file.stem] = "not saved"
    return out


def read_split(store: RunStore, run_id: str, split: str) -> ArrayData:
    """A Python run's saved ``split`` as :class:`~ember.data.ArrayData`, its sha256 verified."""
    path = store.folder(run_id) / DATA_DIR / f"{split}.safetensors"
    if not path.is_file():
        why = recorded_splits(store, run_id).get(split)
        raise RecordError(
            f"run {run_id} kept no '{split}' data"
            + (f" ({why})" if why else "")
            + "; it has: "
            + (", ".join(k for k, v in recorded_splits(store, run_id).items() if v == "saved") or "none")
        )
    try:
        tensors = load_safetensors(_verified(store, run_id, path))
        return ArrayData(tensors["x"], tensors["y"])
    except (SafetensorError, KeyError, ValueError) as e:
        raise RecordError(f"{path} cannot be read: {e}") from None


def task_origin(task: Any) -> tuple[str | None, dict[str, Any]]:
    """The registered name and options a task was created with (``ember.tasks.create`` notes them)."""
    origin = getattr(task, "_ember_origin", None)
    if origin is not None:
        return origin[0], dict(origin[1])
    from ember.tasks import registry

    for name in registry.names():  # an ember task class built directly: its name, default options
        builder = registry.get(name)
        if getattr(builder, "__annotations__", {}).get("return") in (type(task).__name__, type(task)):
            return name, {}
    return None, {}


def _as_tensors(data: Any, limit: int) -> tuple[ArrayData | None, str]:
    if isinstance(data, DataLoader):
        data = data.dataset
    if isinstance(data, TensorDataset) and len(data.tensors) == 2:
        data = tuple(data.tensors)
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        data = ArrayData(*data)
    if not isinstance(data, ArrayData):
        if not isinstance(data, Dataset) or not hasattr(data, "__len__"):
            return None, f"a {type(data).__name__}, not tensors or a sized dataset"
        try:
            first = data[0]
        except Exception as e:  # a dataset that cannot be indexed: say so, keep training
            return None, f"its first item cannot be read ({type(e).__name__})"
        if not (
            isinstance(first, tuple | list)
            and len(first) == 2
            and all(isinstance(t, torch.Tensor) for t in first)
        ):
            return None, "its items are not (x, y) tensor pairs"
        size = sum(t.numel() * t.element_size() for t in first) * len(data)
        if size > limit:
            return None, f"{size / 2**20:.0f} MB, over the {limit / 2**20:.0f} MB kept in a run"
        xs, ys = zip(*(data[i] for i in range(len(data))), strict=True)
        data = ArrayData(torch.stack(xs), torch.stack(ys))
    size = data.x.numel() * data.x.element_size() + data.y.numel() * data.y.element_size()
    if size > limit:
        return None, f"{size / 2**20:.0f} MB, over the {limit / 2**20:.0f} MB kept in a run"
    return data, ""


def _verified(store: RunStore, run_id: str, path: Path) -> bytes:
    """The file's bytes, checked against the sha256 the run recorded for it."""
    import hashlib

    content = path.read_bytes()
    rel = str(path.relative_to(store.folder(run_id)))
    recorded = {p: digest for p, _, digest, _ in store.artifacts(run_id)}.get(rel)
    if recorded is not None and hashlib.sha256(content).hexdigest() != recorded:
        raise RecordError(f"{path} does not match the sha256 recorded when it was written: it was changed")
    return content


__all__ = [
    "DATA_DIR",
    "LIMIT",
    "SPEC_FILE",
    "RecordError",
    "read_spec",
    "read_split",
    "record_split",
    "recorded_splits",
    "task_origin",
    "write_spec",
]
