"""What :func:`ember.deploy.bundle.package` gathers from a run besides its weights: the data's
fingerprints, the drift profile (and which split it came from), and the model's ONNX graph.

Every run is read the same way, through :func:`ember.recipe.load_run`: a recipe run's splits are
the very indices it trained on, a Python run's the data it kept.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from ember.data import ArrayData, fingerprint, fingerprint_indices, load_splits
from ember.deploy.profile import PROFILED_KINDS, ReferenceProfile, build_profile
from ember.tasks import contract
from ember.tasks.spec import ModelSpec

SPLITS = ("train", "val", "test")


def data_meta(run: Any) -> dict[str, Any]:
    """``meta.json``'s ``data``: the data's sha256 and a fingerprint and size per split.

    A recipe run's splits are fingerprinted by their indices into the data set (what it saved); a
    Python run's by the tensors it kept.
    """
    splits: dict[str, str] = {}
    sizes: dict[str, int] = {}
    saved = run.folder / "splits"
    if saved.is_dir():
        for name, idx in sorted(load_splits(saved).items()):
            splits[name], sizes[name] = fingerprint_indices(idx), len(idx)
    else:
        for name in run.available_splits():
            part = run.split(name)
            if isinstance(part, ArrayData):
                splits[name], sizes[name] = fingerprint(part.x, part.y), len(part)
    return {
        "dataset": run.config.data.name if saved.is_dir() else None,
        "sha256": run.data_sha256,
        "splits": splits,
        "sizes": sizes,
    }


def profile_of(
    run: Any, module: nn.Module, *, max_rows: int
) -> tuple[ReferenceProfile | None, dict[str, Any]]:
    """The drift reference profile of ``run`` and ``meta.json``'s note saying where it came from.

    The training split when the run has it; else its validation or test split (said in the note);
    None, with the reason, when the inputs are not images or tables or the run kept no data.
    """
    spec: ModelSpec = run.spec
    kind = spec.inputs.kind
    if not contract.profiles_inputs(run.task):
        return None, {
            "split": None,
            "note": f"a {spec.task} model is asked for samples, not given inputs like its training data: "
            "serving it watches no drift",
        }
    if kind not in PROFILED_KINDS:
        return None, {
            "split": None,
            "note": f"drift is profiled on image and table inputs; this model's {kind} inputs have no "
            "reference profile, so serving it watches no drift",
        }
    for split in SPLITS:
        try:
            data = run.split(split)
        except ValueError:
            continue
        if not hasattr(data, "__getitem__") or not hasattr(data, "__len__") or not len(data):
            continue  # a ready loader: not rows to sample from
        profile = build_profile(
            module, data, task=spec.task, classifier=bool(spec.classes), max_rows=max_rows
        )
        note = (
            "" if split == "train" else f"the run kept no training split; the profile is of its {split} split"
        )
        return profile, {"split": split, "rows": profile.rows, "note": note}
    return None, {
        "split": None,
        "note": "the run kept no data to profile (a Python run's data over the size kept, or not tensors); "
        "serving it watches no drift",
    }


def onnx_member(model: nn.Module, task: Any, spec: ModelSpec, out: Path) -> tuple[bytes, dict[str, Any]]:
    """``model.onnx`` for a bundle (exported through the task's contract, verified in ONNX Runtime)
    and ``meta.json``'s ``onnx`` entry describing it."""
    from ember.deploy.export import export_model

    with tempfile.TemporaryDirectory(
        prefix="ember-package-", dir=out.parent if out.parent.is_dir() else None
    ) as tmp:
        report = export_model(model, task, spec, Path(tmp) / "model.onnx", format="onnx")
        data = report.path.read_bytes()
    return data, {
        "sha256": report.sha256,
        "max_abs_error": report.max_abs_error,
        "atol": report.atol,
        "opset": report.opset,
        "inputs": list(report.inputs),
        "dynamic_batch": report.dynamic_batch,
        "dynamic_sequence": report.dynamic_sequence,
        "batch_sizes": list(report.batch_sizes),
    }


__all__ = ["data_meta", "onnx_member", "profile_of"]
