"""What ``ember plan`` measures for a run or a bundle: the model as its task exports it (tensors in,
tensors out), example inputs, held-out data for the quality checks, calibration rows.

The measuring and choosing is :func:`ember.deploy.placement.plan`; this module only gathers its
inputs, through the task contract (`ember.tasks.contract`), so every family is planned the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ember.data import ArrayData
from ember.deploy import bench
from ember.tasks import contract
from ember.tasks.spec import NotApplicable


@dataclass
class PlanInputs:
    """Everything :func:`ember.deploy.placement.plan` takes about one model."""

    model: nn.Module
    example: bench.Inputs
    heldout: Any
    """Inputs, or ``(inputs, labels)``, for the backends' quality checks."""
    calibration: torch.Tensor | None
    default_out: Path
    what: str


def plan_inputs(
    ref: str, *, runs_dir: str | Path | None = None, registry: str | Path | None = None
) -> PlanInputs:
    """A run (id, prefix, ``latest``) or a bundle (file or registry reference) ready to plan."""
    from ember.track import RunNotFoundError, RunStore

    if not Path(ref).is_file():
        try:
            RunStore(runs_dir).get(ref)
        except RunNotFoundError:
            pass
        else:
            return _run_inputs(ref, runs_dir)
    return _bundle_inputs(ref, registry)


def _run_inputs(ref: str, runs_dir: str | Path | None) -> PlanInputs:
    from ember.deploy.compress import held_out, loaded_inputs, timing_inputs
    from ember.recipe import load_run

    loaded = load_run(ref, runs_dir=runs_dir)
    _, data = held_out(loaded, limit=2048)
    example = timing_inputs(loaded, data)
    heldout: Any = example
    if isinstance(data, ArrayData) and isinstance(example, torch.Tensor):
        heldout = (data.x, data.y) if data.y.dim() == 1 and not data.y.is_floating_point() else data.x
    one = isinstance(example, torch.Tensor)
    return PlanInputs(
        model=contract.export_module(loaded.task, loaded.model.eval(), loaded.spec),
        example=example[:64] if one else example,
        heldout=heldout,
        calibration=loaded_inputs(loaded, 512) if one else None,
        default_out=loaded.record.folder / "plan.json",
        what=f"run {loaded.id}",
    )


def _bundle_inputs(ref: str, registry: str | Path | None) -> PlanInputs:
    from ember.deploy.bundle import open_bundle

    bundle = open_bundle(ref, registry=registry)
    if bundle.model is None:
        raise NotApplicable(
            f"bundle {bundle.path} carries its model as an ONNX graph only and a plan times the PyTorch model "
            "against it; install the model's code (its entry point) where the bundle is opened, or serve the "
            "graph as it is (ember serve BUNDLE)"
        )
    task, spec = bundle.task, bundle.spec
    model = contract.export_module(task, bundle.model.eval(), spec)
    default = bundle.path.parent / "plan.json"
    example = contract.example_inputs(task, spec, 64)
    if len(example) > 1:
        return PlanInputs(model, example, example, None, default, f"bundle {bundle.path}")
    try:  # the bundle's own recipe rebuilds its data and held-out split (same seed)
        from ember.recipe import prepare

        prep = prepare(bundle.config)
        held = prep.test if prep.test is not None else prep.val
        x, y = _tensors(held if held is not None else prep.train, 2048)
        calibration, _ = _tensors(prep.train, 512)
        return PlanInputs(model, x[:64], (x, y), calibration, default, f"bundle {bundle.path}")
    except Exception:  # its data is not here: agreement with eager on the task's example inputs
        x = contract.example_inputs(task, spec, 512)[0]
        return PlanInputs(
            model, x[:64], x, x, default, f"bundle {bundle.path} (synthetic inputs: its data is not here)"
        )


def _tensors(data: Any, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(X, y) tensors of the first ``limit`` examples of a dataset."""
    if isinstance(data, ArrayData):
        return data.x[:limit], data.y[:limit]
    items = [data[i] for i in range(min(limit, len(data)))]
    return torch.stack([torch.as_tensor(x) for x, _ in items]), torch.as_tensor([int(y) for _, y in items])


__all__ = ["PlanInputs", "plan_inputs"]
