"""Data-parallel training on torch.distributed, in the processes torchrun starts.

torchrun (``ember train --nproc N`` runs it for you, `ember.train.launch`) starts one process per
rank with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous in the environment.
`setup` joins that process group (gloo on CPU, NCCL on CUDA, each rank on ``cuda:LOCAL_RANK``) and
returns a `Parallel`, which the Trainer and the loop ask at a few points; a single process gets
None and runs exactly as before.

What holds in a job of ``W`` ranks:

- ``data.batch_size`` is the global batch: every rank builds the same seeded order and keeps its
  shard of every global batch (`ember.data.sharding`), so ``W`` processes take the optimizer steps
  one process would take on the same batches (DDP averages the ranks' gradients).
- Seeds agree where they must and differ where they must: every rank starts from the same weights
  (built from the same seed; DDP and `ember.train.fsdp` also copy rank 0's), while dropout and
  augmentation draw from per-rank streams. Rank 0's stream is the single process's; rank ``r``'s
  is seeded from (seed, r, step) at the start and again at every checkpoint, so a resumed job
  draws what the uninterrupted job drew with no per-rank state in the checkpoint.
- Gradients of micro-batches that only accumulate are not all-reduced (``no_sync``); the last
  micro-batch of each group, and of each epoch, is.
- The logged training loss and samples/s are reduced across ranks (one all-reduce at each log
  step); validation runs on every rank over the whole validation split (the replicas are equal,
  so every rank computes the same metrics and stops early at the same epoch).
- The ranks stop after the same step (`StopVote`): SIGTERM (which torchrun passes to every
  worker when it is stopped itself) ends every rank's fit with the final checkpoint, as it does a
  single process's; a callback's stop on one rank is every rank's.
- Only rank 0 writes: logs, checkpoints (the unwrapped model's keys), run-store rows, the final
  weights. The other ranks follow rank 0's run (`FollowerRun`), which needs a runs folder that
  every node sees (a shared file system, as ``torch.distributed.checkpoint`` needs too).

Example:
    >>> setup("auto", torch.device("cpu")) is None  # one process: nothing changes
    True
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ember.data.loader import derive_seed
from ember.track import Run, RunStore, seed_everything

__all__ = [
    "FollowerRun",
    "Parallel",
    "RankCheckpointer",
    "StopVote",
    "environment",
    "is_main_process",
    "rank_device",
    "restarted_run",
    "setup",
    "shutdown",
    "world_size",
    "wrap",
]


def world_size() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """True on rank 0 of a torchrun job, and in a process torchrun did not start."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass
class Parallel:
    """This process's place in a data-parallel job, and the few things the loop asks of it."""

    rank: int
    world_size: int
    local_rank: int
    strategy: str
    """``ddp`` or ``fsdp``."""
    backend: str
    seed: int = 0
    wrapped: nn.Module | None = field(default=None, repr=False)
    """The module the loop calls: a DDP wrapper of the model (None: the model itself, as under FSDP)."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def train_module(self, model: nn.Module) -> nn.Module:
        """The module a training step calls (the DDP wrapper, or ``model``)."""
        return self.wrapped if self.wrapped is not None else model

    def hold_gradients(self, module: nn.Module) -> contextlib.AbstractContextManager[Any]:
        """Forward and backward inside it accumulate gradients locally, with no all-reduce."""
        no_sync = getattr(module, "no_sync", None)
        if no_sync is not None:  # DDP
            return no_sync()
        return _fsdp_no_sync(module)

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed over all ranks (one all-reduce; every rank gets the sum)."""
        import torch.distributed as dist

        values = values.clone()
        dist.all_reduce(values)
        return values

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any."""
        return bool(self.sum(torch.tensor([float(flag)], device=self._device())).item() > 0)

    def stop_vote(self) -> StopVote:
        """A new `StopVote` among this job's ranks (every rank must call it: it may form a group)."""
        return StopVote(self.backend)

    def broadcast_text(self, text: str) -> str:
        """Rank 0's ``text`` on every rank."""
        import torch.distributed as dist

        box = [text if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return str(box[0])

    def reseed(self, step: int) -> None:
        """Seed a rank's own random streams (dropout ...) from (seed, rank, step); rank 0 keeps the
        single process's stream (it is saved in checkpoints and restored)."""
        if self.rank:
            seed_everything(derive_seed(self.seed, self.rank, step))

    def _device(self) -> torch.device:
        return (
            torch.device("cuda", torch.cuda.current_device())
            if self.backend == "nccl"
            else torch.device("cpu")
        )


class StopVote:
    """The ranks agree on when to stop: SIGTERM reaches them at different steps and a callback may
    stop one rank only, yet every rank must leave the loop after the same step (the others would
    wait in their next all-reduce forever).

    At each optimizer step a rank sends its wish (0: go on, 1: stop, 1 + signal number: stopped by
    that signal) in an asynchronous all-reduce (max) and reads the previous step's result, so all
    stop together one step after the first one asked, and no step waits for the vote. The vote runs
    on the CPU (gloo; a gloo group beside NCCL on GPUs), so it never syncs a GPU either.
    """

    def __init__(self, backend: str) -> None:
        import torch.distributed as dist

        self.group = None if backend == "gloo" else dist.new_group(backend="gloo")
        self.flag = torch.zeros(1)
        self.work: Any = None

    def step(self, state: Any) -> bool:
        """After an optimizer step: True when any rank asked to stop at the previous step (then
        ``state`` stops as that rank's did); this rank's wish goes out now."""
        import torch.distributed as dist

        agreed = self._received(state)
        self.flag.fill_(_wish(state))
        self.work = dist.all_reduce(self.flag, op=dist.ReduceOp.MAX, group=self.group, async_op=True)
        return agreed

    def agree(self, state: Any) -> bool:
        """At an epoch end, every rank at once: ``state`` stops if any rank's does."""
        import torch.distributed as dist

        self._received(state)
        self.flag.fill_(_wish(state))
        dist.all_reduce(self.flag, op=dist.ReduceOp.MAX, group=self.group)
        return self._apply(state)

    def _received(self, state: Any) -> bool:
        if self.work is None:
            return False
        self.work.wait()
        self.work = None
        return self._apply(state)

    def _apply(self, state: Any) -> bool:
        wish = int(self.flag.item())
        if wish and not state.should_stop:
            state.should_stop, state.stop_reason = True, state.stop_reason or "stopped by another rank"
        if wish > 1 and not state.interrupted:  # a signal stopped another rank: this one stops as it did
            name = signal.Signals(wish - 1).name
            state.interrupted, state.stop_reason = name, f"stopped by {name}"
        return wish > 0


def _wish(state: Any) -> float:
    if state.interrupted:
        return float(1 + signal.Signals[state.interrupted])
    return 1.0 if state.should_stop else 0.0


@contextlib.contextmanager
def _fsdp_no_sync(module: nn.Module) -> Iterator[None]:
    set_sync = getattr(module, "set_requires_gradient_sync", None)
    if set_sync is None:
        yield
        return
    set_sync(False)
    try:
        yield
    finally:
        set_sync(True)


def setup(strategy: str, device: torch.device, *, seed: int = 0) -> Parallel | None:
    """Join torchrun's process group when this process is one rank of several (or ``fsdp`` was asked).

    Args:
        strategy: ``auto`` (``ddp`` when ``WORLD_SIZE`` > 1), ``ddp`` or ``fsdp``.
        device: the configured device; CUDA means NCCL and this rank's own GPU.
        seed: the run's seed (ranks other than 0 derive theirs from it).

    Returns:
        The job's `Parallel`, or None for a single process (``fsdp`` in one process is a job of one
        rank, so its checkpoints load into a job of any size).
    """
    import torch.distributed as dist

    world = world_size()
    if world == 1 and strategy != "fsdp":
        return None
    backend = "nccl" if device.type == "cuda" else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        _warn_shared_store()
        if world == 1 and "MASTER_ADDR" not in os.environ:  # fsdp in a plain process: a group of one
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
        else:
            dist.init_process_group(backend)  # env:// as torchrun sets it
    rank = dist.get_rank()
    return Parallel(
        rank=rank,
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        strategy="fsdp" if strategy == "fsdp" else "ddp",
        backend=backend,
        seed=seed,
    )


def _warn_shared_store() -> None:
    """torchrun restarts with the agent's shared store often fail to reconnect (`ember.train.launch`)."""
    restarts = int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0"))
    shared = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    if shared and restarts and is_main_process() and os.environ.get("TORCHELASTIC_RESTART_COUNT") == "0":
        print(
            "ember: torchrun --max-restarts with the agent's shared TCPStore: restarted workers can fail "
            "to connect ('connectFullMesh failed') or hang; set TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 "
            "(ember train --nproc does)",
            file=sys.stderr,
        )


def rank_device(device: torch.device, parallel: Parallel | None) -> torch.device:
    """This rank's device: ``cuda:LOCAL_RANK`` for a CUDA job, else ``device``."""
    if parallel is not None and device.type == "cuda":
        return torch.device("cuda", parallel.local_rank)
    return device


def shutdown() -> None:
    """Leave the process group, if this process joined one (at the end of ``ember train``)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def environment() -> dict[str, Any]:
    """What a run records about the torchrun job that trains it: its size and id ({} outside torchrun)."""
    job = os.environ.get("TORCHELASTIC_RUN_ID")
    if job is None:
        return {}
    nodes = int(os.environ.get("GROUP_WORLD_SIZE", "1"))
    return {"distributed": {"world_size": world_size(), "nodes": nodes}, "job": job}


def restarted_run(store: RunStore) -> str | None:
    """The run this torchrun job started before its workers were restarted (``--max-restarts``).

    torchrun restarts every worker of a job when one fails; the new workers carry the same
    ``TORCHELASTIC_RUN_ID`` and a higher ``TORCHELASTIC_RESTART_COUNT``. The run the first workers
    created records the job id (`environment`), so the new ones resume it instead of starting
    another. None on a first start, outside torchrun, or when the first workers failed before
    creating a run.
    """
    job = os.environ.get("TORCHELASTIC_RUN_ID")
    if not job or int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) == 0:
        return None
    for record in store.list():  # newest first
        if record.environment.get("job") == job:
            return record.id
    return None


class FollowerRun(Run):
    """Rank 0's run as the other ranks see it: its folder and id; writing is rank 0's alone."""

    def log(self, metrics: dict[str, float], *, step: int, epoch: int | None = None) -> None:
        return None

    def write(self, rows: list[tuple[str, int, int | None, str, float, float]]) -> None:
        return None

    def update(self, **fields: Any) -> None:
        return None

    def artifact(self, path: Any, kind: str) -> str:
        return ""

    def finish(self, status: str, *, summary: dict[str, Any] | None = None, error: str | None = None) -> None:
        return None

    def start_heartbeat(self, every_s: float = 0.0) -> None:
        return None

    def save_record(self) -> None:
        return None


def wrap(model: nn.Module, parallel: Parallel) -> None:
    """Make ``model`` data-parallel before its optimizer is built: ``fully_shard`` in place (fsdp),
    or a DDP wrapper kept as ``parallel.wrapped`` (ddp; BatchNorm becomes SyncBatchNorm on CUDA,
    where torch has it, so a rank normalizes over the global batch as one process does)."""
    if parallel.strategy == "fsdp":
        from ember.train import fsdp

        fsdp.shard(model)
        return
    from torch.nn.parallel import DistributedDataParallel

    on_gpu = parallel.backend == "nccl"
    if on_gpu:
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        assert converted is model, "a bare BatchNorm cannot be the model under DDP"
    parallel.wrapped = DistributedDataParallel(model, device_ids=[parallel.local_rank] if on_gpu else None)


class RankCheckpointer:
    """The checkpointer of a DDP job: rank 0 writes through ``inner`` (a whole, unwrapped model per
    file; None on the other ranks); every rank reseeds its own random streams at the same step
    (see `Parallel.reseed`)."""

    def __init__(self, inner: Any, parallel: Parallel) -> None:
        self.inner, self.parallel = inner, parallel

    def save(self, state: Any, *, reason: str) -> None:
        if self.inner is not None:  # rank 0's; the other ranks have none
            self.inner.save(state, reason=reason)
        self.parallel.reseed(state.step)
