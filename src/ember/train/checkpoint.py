"""Checkpoints that nothing executes on load: one safetensors file holding every tensor, with the
rest of the training state as JSON in the file's metadata.

A checkpoint holds the model weights, the optimizer state, the GradScaler state, the RNG states
(torch, CUDA, numpy, Python), any extra training tensors (the weights' moving average, ``ema/*``)
and the loop position (epoch, batch within the epoch, step), so a
resumed run continues exactly, mid-epoch included. Writes are atomic: bytes go to a temporary file in
the same folder, are fsynced, then renamed over the target, and the folder is fsynced; a crash at any
point leaves the previous checkpoint as it was (and a ``.NAME.tmp-PID`` file that
:func:`ember._io.remove_orphans` deletes at the run's next start).

Every checkpoint carries the sha256 of its header and data (:mod:`ember.train.sealed`); loading
recomputes it, so a flipped byte is an error naming the file, and :func:`latest_checkpoint` falls
back to the previous checkpoint and says so.

Example:
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> model = torch.nn.Linear(2, 2)
    >>> path = Path(tempfile.mkdtemp()) / "step-000001.safetensors"
    >>> save_checkpoint(path, model=model, meta={"step": 1})
    >>> load_checkpoint(path).meta["step"]
    1
"""

from __future__ import annotations

import json
import logging
import queue
import random
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy
import torch
from safetensors.torch import save
from torch import nn

from ember._io import atomic_write_bytes
from ember.train.sealed import WeightsError, read_safetensors, seal

log = logging.getLogger("ember.train")

STEP_FILE = re.compile(r"^step-(\d+)\.safetensors$")
NUMPY_DTYPES = frozenset(
    {torch.float64, torch.float32, torch.float16, torch.int64, torch.int32, torch.int16, torch.int8}
    | {torch.uint8, torch.bool}
)


class CheckpointError(WeightsError):
    """A checkpoint that cannot be read or trusted; the message names the file."""


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns: tensors by section, and the JSON metadata."""

    path: Path
    model: dict[str, torch.Tensor]
    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    def optimizer_state(self) -> dict[str, Any]:
        """The optimizer ``state_dict`` rebuilt from flat tensors plus JSON."""
        layout = self.meta["optimizer"]
        state: dict[int, dict[str, Any]] = {}
        for key, value in layout["scalars"].items():
            idx, name = key.split("/", 1)
            state.setdefault(int(idx), {})[name] = value
        for key, tensor in self.tensors.items():
            if key.startswith("optim/"):
                _, idx, name = key.split("/", 2)
                state.setdefault(int(idx), {})[name] = tensor
        return {"state": state, "param_groups": layout["param_groups"]}


def nonfinite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an Inf (parameters, buffers, moments)."""
    floats = [(k, t) for k, t in tensors.items() if t.is_floating_point() and t.numel()]
    if not floats:
        return []
    flags = torch.stack([torch.isfinite(t).all() for _, t in floats])
    if bool(flags.all()):  # one host sync for the common case
        return []
    return [k for (k, _), ok in zip(floats, flags.tolist()) if not ok]


def safetensors_ready(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors with no shared storage (tied weights are copied)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, Any]] = set()
    for name, tensor in state.items():
        t = tensor.detach().to("cpu").contiguous()
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        out[name] = t.clone() if key in seen else t
        seen.add(key)
    return out


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """All RNG states: tensors (torch, CUDA, numpy's and Python's Mersenne Twister keys) and JSON (the
    rest). The 624-word keys travel as tensors: as JSON they would cost a checkpoint ~0.1 ms each."""
    tensors = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng/numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    py_version, py_state, py_gauss = random.getstate()
    tensors["rng/python"] = torch.from_numpy(np.fromiter(py_state, dtype=np.int64, count=len(py_state)))
    meta = {"numpy": [kind, int(pos), int(has_gauss), float(cached)], "python": [py_version, py_gauss]}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng/torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng/cuda/"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, tensors["rng/numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    if "rng/python" in tensors:
        version, gauss = meta["python"]
        state = tuple(int(v) for v in tensors["rng/python"].tolist())
    else:  # checkpoints written before the key moved into a tensor keep it in the JSON
        version, listed, gauss = meta["python"]
        state = tuple(listed)
    random.setstate((version, state, gauss))


def snapshot(
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scaler: torch.amp.GradScaler | None = None,
    meta: dict[str, Any] | None = None,
    extra: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and JSON metadata of a checkpoint, taken now (RNG states included); ``extra``
    tensors are kept under their own keys (`Checkpoint.tensors` gives them back).

    The tensors are the live ones (moved to the CPU where they are elsewhere): serialize them
    (:func:`encode`) before training changes them in place.
    """
    tensors = {f"model/{k}": v for k, v in safetensors_ready(model.state_dict()).items()}
    tensors.update(safetensors_ready(extra or {}))
    rng_tensors, rng_meta = rng_state()
    tensors.update(rng_tensors)
    info: dict[str, Any] = dict(meta or {})
    info["rng"] = rng_meta
    if optimizer is not None:
        sd = optimizer.state_dict()
        scalars: dict[str, Any] = {}
        for idx, slots in sd["state"].items():
            for name, value in slots.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim/{idx}/{name}"] = value.detach().to("cpu")
                else:
                    scalars[f"{idx}/{name}"] = value
        info["optimizer"] = {"param_groups": copy_json(sd["param_groups"]), "scalars": scalars}
    if scaler is not None:
        info["scaler"] = scaler.state_dict()
    return tensors, info


def copy_json(value: Any) -> Any:
    """A deep copy of JSON-like data (param groups hold live lists of parameter ids and floats)."""
    if isinstance(value, dict):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [copy_json(v) for v in value]
    return value


def encode(
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scaler: torch.amp.GradScaler | None = None,
    meta: dict[str, Any] | None = None,
    extra: dict[str, torch.Tensor] | None = None,
) -> bytes:
    """A whole checkpoint as safetensors bytes, taken now (``extra``: see `snapshot`).

    The bytes are the one copy a checkpoint needs: training may go on changing the live tensors
    while another thread writes them (:class:`BackgroundWriter`), which then holds the GIL only
    for the few Python lines around its system calls.
    """
    tensors, info = snapshot(model=model, optimizer=optimizer, scaler=scaler, meta=meta, extra=extra)
    return serialize(tensors, metadata={"ember": json.dumps(info)})


def serialize(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """The safetensors bytes of CPU ``tensors``. Through numpy where every dtype allows it: the same
    file format, at a third of the per-tensor Python cost of ``safetensors.torch.save`` (which a
    small model's epoch-end checkpoint feels); bf16 and other numpy-less dtypes go through torch."""
    if all(t.dtype in NUMPY_DTYPES and t.device.type == "cpu" for t in tensors.values()):
        return safetensors.numpy.save(
            {k: v.detach().contiguous().numpy() for k, v in tensors.items()}, metadata=metadata
        )
    return save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)


def save_checkpoint(
    path: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scaler: torch.amp.GradScaler | None = None,
    meta: dict[str, Any] | None = None,
) -> None:
    """Atomically write model, optimizer, scaler and RNG state plus ``meta`` (JSON) to ``path``."""
    write_sealed(Path(path), encode(model=model, optimizer=optimizer, scaler=scaler, meta=meta))


def write_sealed(path: Path, data: bytes) -> None:
    """Atomically write safetensors bytes with their sha256 added (:func:`ember.train.sealed.seal`)."""
    atomic_write_bytes(path, seal(data))


def save_weights(path: Path, model: nn.Module) -> None:
    """Atomically write a model's weights as a plain, sealed safetensors file."""
    write_sealed(path, save(safetensors_ready(model.state_dict())))


class BackgroundWriter:
    """Runs file writes in order on one background thread, so training does not wait for the disk.

    Serializing and fsyncing a checkpoint, and committing buffered metrics to SQLite, take
    milliseconds that a small model's epoch cannot hide; here they overlap the next steps instead.
    At most ``depth`` jobs wait: a caller that gets further ahead blocks, which bounds the memory
    held by snapshots. A job's exception is raised in the caller at the next :meth:`submit` or at
    :meth:`close`, which waits for every job, so a run that ends, fails or is interrupted still
    finishes the checkpoint it started (each file written atomically: a kill mid-write leaves the
    previous one).

    Example:
        >>> writer = BackgroundWriter()
        >>> done = []
        >>> writer.submit(done.append, 1)
        >>> writer.close()
        >>> done
        [1]
    """

    def __init__(self, depth: int = 1) -> None:
        self._jobs: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = queue.Queue(depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="ember-writer", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, args = job
            try:
                if self._error is None:  # after a failure, later writes are skipped (the caller is told)
                    fn(*args)
            except BaseException as e:  # handed to the training thread
                self._error = e
            finally:
                self._jobs.task_done()
        self._jobs.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)``; raises the error of an earlier job, if one failed."""
        self._raise()
        if not self._thread.is_alive():
            raise RuntimeError("the background writer is closed")
        self._jobs.put((fn, args))

    def wait(self) -> None:
        """Block until every queued job has run; raises the error of one that failed."""
        self._jobs.join()
        self._raise()

    def close(self) -> None:
        """Finish every queued job and stop the thread; raises the error of one that failed."""
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()
        self._raise()


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (no code runs: safetensors + JSON).

    Raises:
        CheckpointError: the file is missing, damaged (its sha256 differs from the one it records),
            truncated, or not an ember checkpoint; the message names it.
    """
    path = Path(path)
    try:
        tensors, metadata = read_safetensors(path, what=f"checkpoint {path}")
        meta = json.loads(metadata["ember"])
    except WeightsError as e:
        raise CheckpointError(str(e)) from None
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or not an ember checkpoint: {e}") from None
    model = {k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")}
    rest = {k: v for k, v in tensors.items() if not k.startswith("model/")}
    return Checkpoint(path=path, model=model, meta=meta, tensors=rest)


def restore(
    ckpt: Checkpoint,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scaler: torch.amp.GradScaler | None = None,
    rng: bool = True,
) -> None:
    """Load a checkpoint's state into live objects."""
    model.load_state_dict(ckpt.model)
    if optimizer is not None and "optimizer" in ckpt.meta:
        optimizer.load_state_dict(ckpt.optimizer_state())
    if scaler is not None and "scaler" in ckpt.meta:
        scaler.load_state_dict(ckpt.meta["scaler"])
    if rng:
        set_rng_state(ckpt.tensors, ckpt.meta["rng"])


def step_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every step checkpoint in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := STEP_FILE.fullmatch(p.name))]
    return sorted(found)


def latest_checkpoint(folder: Path) -> Checkpoint | None:
    """The newest readable checkpoint in ``folder``.

    A damaged newest one falls back to the previous, and says so: a warning on the
    ``ember.train`` logger names each skipped file and why (stderr when logging is not set up).
    """
    errors = []
    for _, path in reversed(step_checkpoints(folder)):
        try:
            found = load_checkpoint(path)
        except CheckpointError as e:
            errors.append(str(e))
            continue
        for error in errors:
            log.warning("skipped a checkpoint: %s; using %s instead", error, path.name)
        return found
    if errors:
        raise CheckpointError("no readable checkpoint in " + str(folder) + ": " + "; ".join(errors))
    return None


def prune_checkpoints(folder: Path, *, keep_last: int, protect: set[Path]) -> None:
    """Delete old step checkpoints, keeping the newest ``keep_last`` and every path in ``protect``."""
    found = step_checkpoints(folder)
    doomed = found[: max(0, len(found) - keep_last)]
    if not doomed:
        return
    protected = {p.resolve() for p in protect}
    where = folder.resolve()
    for _, path in doomed:
        if where / path.name not in protected:
            path.unlink(missing_ok=True)
