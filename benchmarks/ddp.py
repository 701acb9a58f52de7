"""Data-parallel throughput: 1 process vs 2 DDP processes on the same global batch, and what the
all-reduce costs per step.

Run without torchrun, the script starts itself under ``torchrun --standalone --nproc-per-node 2``.
In that one job the variants take turns, each round in a rotated order, for ``--rounds`` rounds
of ``--steps`` timed steps (after ``--warmup``):

- ``1 process``: rank 0 alone trains on the whole global batch with ``--threads`` threads (the
  other rank waits at a barrier), as ``ember train`` does without ``--nproc``; and the same with
  one thread (``1 process, 1 thread``): on a small model, or a machine shared with other jobs,
  intra-op threads can cost more than they bring.
- ``2 processes (DDP)``: each rank trains on its half of the same global batch with
  ``threads / 2`` threads; DDP all-reduces the gradients in backward, as ``--nproc 2`` does.
- ``2 processes, no all-reduce``: the same under ``no_sync()`` (what accumulating micro-batches
  do): the compute alone; its gap to the DDP variant is the all-reduce's cost in a step.

Beside them, one all-reduce of a buffer as large as the model's gradients, alone (the median of
50). Throughput is samples/s of the global batch; each ratio is the median of the rounds' ratios,
against the 1-process variant and against its 1-thread run.
The model is the digits recipe's CNN (``cnn``, 1x8x8 inputs, 10 classes) on random data of that
shape, AdamW, fp32.

Usage:
    python benchmarks/ddp.py
    python benchmarks/ddp.py --batch 256 --model resnet18 --size 32 --channels 3
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import subprocess
import sys
import time
from collections.abc import Callable

import _common
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import ember


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--size", type=int, default=8, help="image side")
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64, help="the global batch")
    parser.add_argument(
        "--threads", type=int, default=2, help="threads of the 1-process variant (split over ranks)"
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    return parser.parse_args(argv)


def timed_steps(step: Callable[[], None], n: int) -> float:
    """Seconds per step over ``n`` steps."""
    start = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - start) / n


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if "RANK" not in os.environ:  # start the job
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, args.threads // 2))}
        sys.exit(subprocess.call([*command, __file__, *(argv or sys.argv[1:])], env=env))
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = ember.models.create(args.model, in_channels=args.channels, num_classes=10, image_size=args.size)
    single = copy.deepcopy(model)
    ddp = DistributedDataParallel(model)
    optimizers = {
        "single": torch.optim.AdamW(single.parameters(), lr=1e-3),
        "ddp": torch.optim.AdamW(ddp.parameters(), lr=1e-3),
    }
    x = torch.randn(args.batch, args.channels, args.size, args.size)
    y = torch.randint(0, 10, (args.batch,))
    shard = (x[rank::world], y[rank::world])

    def train_step(
        module: nn.Module, optimizer: torch.optim.Optimizer, batch: tuple[torch.Tensor, ...]
    ) -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(module(batch[0]), batch[1]).backward()
        optimizer.step()

    def one_process(threads: int) -> float:
        seconds = 0.0
        if rank == 0:
            torch.set_num_threads(threads)
            for _ in range(args.warmup):
                train_step(single, optimizers["single"], (x, y))
            seconds = timed_steps(lambda: train_step(single, optimizers["single"], (x, y)), args.steps)
        dist.barrier()
        return seconds

    def two_processes(sync: bool) -> float:
        torch.set_num_threads(max(1, args.threads // world))
        with contextlib.nullcontext() if sync else ddp.no_sync():
            for _ in range(args.warmup):
                train_step(ddp, optimizers["ddp"], shard)
            dist.barrier()
            seconds = timed_steps(lambda: train_step(ddp, optimizers["ddp"], shard), args.steps)
        return seconds

    variants: dict[str, Callable[[], float]] = {
        "1 process": lambda: one_process(args.threads),
        "1 process, 1 thread": lambda: one_process(1),
        "2 processes (DDP)": lambda: two_processes(True),
        "2 processes, no all-reduce": lambda: two_processes(False),
    }
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.rounds):
        for name in _common.rotate(list(variants), r):
            seconds[name].append(variants[name]())
    grads = torch.zeros(sum(p.numel() for p in model.parameters()))
    torch.set_num_threads(max(1, args.threads // world))
    reduce_s = []
    for _ in range(50):
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(grads)
        reduce_s.append(time.perf_counter() - start)
    if rank == 0:
        report(args, seconds, _common.median(reduce_s), grads.numel())
    dist.destroy_process_group()


def report(args: argparse.Namespace, seconds: dict[str, list[float]], reduce_s: float, numel: int) -> None:
    base, one_thread = seconds["1 process"], seconds["1 process, 1 thread"]
    rows = []
    for name, values in seconds.items():
        ratios = [b / v for b, v in zip(base, values)]  # throughput ratio of the round
        ratios_1t = [b / v for b, v in zip(one_thread, values)]
        rows.append(
            [
                name,
                f"{_common.median(values) * 1e3:.2f}",
                f"{args.batch / _common.median(values):,.0f}",
                f"{_common.median(ratios):.2f}x",
                _common.spread(ratios),
                f"{_common.median(ratios_1t):.2f}x",
            ]
        )
    print(_common.machine())
    print(
        f"\n{args.model} on {args.channels}x{args.size}x{args.size}, global batch {args.batch}, AdamW fp32, "
        f"{args.rounds} rounds x {args.steps} steps; gradients {numel:,} floats ({numel * 4 / 2**20:.2f} MiB)"
    )
    header = [
        "variant",
        "ms/step",
        "samples/s",
        "throughput vs 1 process",
        "rounds",
        "vs 1 process, 1 thread",
    ]
    print(_common.table(header, rows))
    ddp = _common.median(seconds["2 processes (DDP)"])
    compute = _common.median(seconds["2 processes, no all-reduce"])
    print(
        f"\nall-reduce in a DDP step: {(ddp - compute) * 1e3:.2f} ms ({(ddp - compute) / ddp:.0%} of the step); "
        f"one all-reduce of the gradients alone: {reduce_s * 1e3:.2f} ms"
    )


if __name__ == "__main__":
    main()
