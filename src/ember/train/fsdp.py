"""``trainer.strategy=fsdp``: torch's ``fully_shard`` (FSDP2), and its sharded checkpoints.

`shard` copies rank 0's weights to every rank, then applies ``fully_shard`` to each transformer
block (the blocks `ember.nn.checkpointing` finds; activation checkpointing composes with it) and
to the whole model: each rank keeps 1/W of every parameter, its gradient and its optimizer
state (DTensors); a block's parameters are all-gathered for its forward and backward, and its
gradients reduce-scattered. The model keeps its class's behaviour and its state-dict keys.

Checkpoints are folders, ``checkpoints/step-NNNNNN.dcp/``, written by every rank through
``torch.distributed.checkpoint`` (each rank its shards, rank 0 the metadata). Model and optimizer
state go through ``get_state_dict`` / ``set_state_dict``, which name the optimizer state by
parameter name: a plain ``optimizer.state_dict()`` round trip indexes it by position and, with
sharded parameters, silently loses it (momentum starts again from zero on resume). The folder is
written as ``step-NNNNNN.dcp.partial`` and renamed once complete, with ``ember.json`` (loop
position, metrics) and rank 0's random state beside the shards. A checkpoint written by W ranks
loads into a job of any size: ``torch.distributed.checkpoint`` reshards on load.

The run's final ``model.safetensors`` is the full state dict (`full_state_dict`), so every later
stage reads it as it reads any run's.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from ember._io import atomic_write_bytes
from ember.nn import checkpointing
from ember.train import checkpoint as ckpt
from ember.train.distributed import Parallel
from ember.train.state import TrainState

__all__ = ["ShardedCheckpointer", "full_state_dict", "latest_sharded", "restore_sharded", "shard"]

STEP_DIR = re.compile(r"^step-(\d+)\.dcp$")
META = "ember.json"
RNG = "rng.safetensors"


def shard(model: nn.Module) -> nn.Module:
    """Shard ``model`` in place across the process group (rank 0's weights on every rank first)."""
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    with torch.no_grad():
        for tensor in model.state_dict().values():  # ranks agree on the initial weights
            dist.broadcast(tensor, src=0)
    for block in checkpointing.find_blocks(model):
        if block is not model:
            fully_shard(block)
    fully_shard(model)
    return model


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's state dict on the CPU: gathered from the shards on rank 0 (every rank must
    call it; the others get an empty dict), or ``model.state_dict()`` for an unsharded model."""
    if not is_sharded(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)  # type: ignore[return-value]


def full_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Sharded tensors (DTensors) gathered whole; every rank must call it."""
    from torch.distributed.tensor import DTensor

    return {k: (v.full_tensor() if isinstance(v, DTensor) else v).cpu() for k, v in tensors.items()}


def _payload(state: TrainState) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model, optim = get_state_dict(state.model, state.optimizer)
    payload: dict[str, Any] = {"model": model, "optim": optim}
    if state.ema is not None:
        payload["ema"] = state.ema.tensors()
    return payload


def step_dirs(folder: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every complete sharded checkpoint in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := STEP_DIR.match(p.name))]
    return sorted((step, p) for step, p in found if (p / META).is_file())


def latest_sharded(folder: Path) -> Path | None:
    """The newest complete sharded checkpoint in ``folder``."""
    found = step_dirs(folder)
    return found[-1][1] if found else None


def restore_sharded(path: Path, state: TrainState, parallel: Parallel) -> None:
    """Load a sharded checkpoint (written by any number of ranks) into ``state`` on every rank."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    payload = _payload(state)
    dcp.load(payload, checkpoint_id=str(path))  # reshards onto this job's ranks
    set_state_dict(
        state.model, state.optimizer, model_state_dict=payload["model"], optim_state_dict=payload["optim"]
    )
    if state.ema is not None:
        state.ema.load(payload["ema"])
    meta = json.loads((path / META).read_text())
    state.load_position(meta["position"])
    if parallel.is_main:
        ckpt.set_rng_state(load_file(path / RNG), meta["rng"])
    parallel.reseed(state.step)


class ShardedCheckpointer:
    """`CheckpointManager`'s policy (best by ``monitor``, ``keep_last``, ``min_interval``) for
    sharded checkpoints: every rank writes its shards; rank 0 decides, completes and prunes."""

    def __init__(
        self,
        folder: Path,
        parallel: Parallel,
        *,
        keep_last: int,
        monitor: str,
        mode: str,
        resumed_from: Path | None,
        min_interval: float = 0.0,
    ) -> None:
        self.folder, self.parallel = folder, parallel
        self.keep_last = max(1, keep_last)
        self.monitor, self.sign = monitor, 1.0 if mode == "max" else -1.0
        self.min_interval = min_interval
        self.written = time.perf_counter()
        self.protect = {resumed_from} if resumed_from is not None else set()
        if parallel.is_main:
            folder.mkdir(parents=True, exist_ok=True)
            for partial in folder.glob("*.dcp.partial"):  # a write a kill interrupted
                shutil.rmtree(partial, ignore_errors=True)

    def save(self, state: TrainState, *, reason: str) -> None:
        path = self.folder / f"step-{state.step:06d}.dcp"
        value = state.metrics.get(self.monitor) if reason != "step" else None
        improved = value is not None and not math.isnan(value)
        improved = improved and (state.best is None or self.sign * (value - state.best) > 0)  # type: ignore[operator]
        now = time.perf_counter()
        skip = reason == "epoch" and not improved and now - self.written < self.min_interval
        if self.parallel.any(skip and self.parallel.is_main):  # rank 0's clock decides for all
            self.parallel.reseed(state.step)
            return
        self.written = now
        if improved:
            state.best, state.best_step = value, state.step
        import torch.distributed.checkpoint as dcp

        partial = path.with_name(path.name + ".partial")
        dcp.save(_payload(state), checkpoint_id=str(partial))  # returns once every rank's shards are written
        if self.parallel.is_main:
            tensors, rng = ckpt.rng_state()
            atomic_write_bytes(partial / RNG, ckpt.serialize(tensors, metadata={}))
            meta = {
                "position": state.position(),
                "reason": reason,
                "metrics": {
                    k: v for k, v in state.metrics.items() if isinstance(v, float) and math.isfinite(v)
                },
                "rng": rng,
                "world_size": self.parallel.world_size,
            }
            atomic_write_bytes(partial / META, json.dumps(meta).encode())
            if path.exists():
                shutil.rmtree(path)
            os.replace(partial, path)
            self._prune(state)
        self.parallel.reseed(state.step)

    def _prune(self, state: TrainState) -> None:
        found = step_dirs(self.folder)
        keep = {p for _, p in found[-self.keep_last :]} | self.protect
        if state.best_step is not None:
            keep.add(self.folder / f"step-{state.best_step:06d}.dcp")
        for _, path in found:
            if path not in keep:
                shutil.rmtree(path, ignore_errors=True)
