"""Activation checkpointing under FSDP2: each rank's peak memory and the step time, with and without.

Run without torchrun, the script starts itself under ``torchrun --standalone --nproc-per-node 2``
(gloo on CPU, ``--threads`` per rank). Both ranks build ember's ``gpt`` (``--layers`` blocks, 4
heads, 256 wide) from the same seed; one copy gets ``ember.nn.checkpointing.apply``, then both are
sharded by `ember.train.fsdp.shard`, in the order ``trainer.activation_checkpointing=true
trainer.strategy=fsdp`` applies them: each block is its own ``fully_shard`` unit, all-gathered for
its forward and again for its backward (where a checkpointed block also recomputes its forward).
A step is forward, cross-entropy and backward (with the gradients' reduce-scatter) on the rank's
half of the global batch.

Peak memory is measured on each rank as ``benchmarks/activation_checkpointing.py`` does it: the
peak of live tensor bytes during one step from ``torch.profiler``'s allocation events, counted
from the step's start (the rank's parameter shards and its batch are already there; gathered
parameters, activations and gradients are counted). A step's time is the slower rank's, after a
barrier; the variants take turns for ``--rounds`` rounds, and the time ratio is the median of
the rounds' ratios.

Usage:
    python benchmarks/fsdp_activation_checkpointing.py
    python benchmarks/fsdp_activation_checkpointing.py --layers 4 --context 256 --batch 16
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import subprocess
import sys
import time

import _common
import torch
import torch.distributed as dist
import torch.nn.functional as F
from activation_checkpointing import peak_bytes
from torch import nn

import ember
from ember.nn import checkpointing
from ember.train import fsdp

VARIANTS = ("plain", "checkpointed")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8, help="the global batch (half on each rank)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    parser.add_argument("--rounds", type=int, default=5)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if "RANK" not in os.environ:  # start the job
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        sys.exit(subprocess.call([*command, __file__, *(argv or sys.argv[1:])], env=env))
    _common.set_threads(args.threads)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    plain = ember.models.create("gpt", vocab_size=65, block_size=args.context, num_layers=args.layers)
    models = {"plain": plain, "checkpointed": checkpointing.apply(copy.deepcopy(plain))}
    for model in models.values():
        fsdp.shard(model)
    ids = torch.randint(0, 65, (args.batch, args.context))[rank::world]
    target = torch.randint(0, 65, (args.batch, args.context))[rank::world]

    def step(model: nn.Module) -> float:
        model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(ids).flatten(0, 1), target.flatten())
        loss.backward()
        return loss.item()

    losses = {name: step(models[name]) for name in VARIANTS}  # also the warm-up step
    grad_diff = max(
        (p.grad.to_local() - q.grad.to_local()).abs().max().item()
        for p, q in zip(plain.parameters(), models["checkpointed"].parameters())
    )
    peaks = {name: peak_bytes(functools.partial(step, models[name])) for name in VARIANTS}
    seconds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for r in range(args.rounds):
        for name in _common.rotate(list(VARIANTS), r):
            dist.barrier()
            start = time.perf_counter()
            step(models[name])
            elapsed = torch.tensor([time.perf_counter() - start])
            dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # the step ends when the slower rank's does
            seconds[name].append(elapsed.item())
    gathered: list[object] = [None] * world
    dist.all_gather_object(gathered, (losses, peaks, grad_diff))
    if rank == 0:
        report(args, gathered, seconds)  # type: ignore[arg-type]
    dist.destroy_process_group()


def report(
    args: argparse.Namespace,
    ranks: list[tuple[dict[str, float], dict[str, int], float]],
    seconds: dict[str, list[float]],
) -> None:
    rows = []
    for name in VARIANTS:
        peaks = [peak[name] / 2**20 for _, peak, _ in ranks]
        ratios = [peak[name] / peak["plain"] for _, peak, _ in ranks]
        rows.append(
            [
                name,
                f"{sum(loss[name] for loss, _, _ in ranks) / len(ranks):.6f}",
                " / ".join(f"{p:,.1f}" for p in peaks),
                " / ".join(f"{r:.2f}x" for r in ratios),
                f"{_common.median(seconds[name]) * 1e3:.0f}",
                f"{_common.median([s / b for s, b in zip(seconds[name], seconds['plain'])]):.2f}x",
                _common.spread([s / b for s, b in zip(seconds[name], seconds["plain"])]),
            ]
        )
    print(_common.machine())
    print(
        f"\nFSDP2 on {len(ranks)} ranks (gloo, {args.threads} thread each): GPT {args.layers} layers x 4 heads "
        f"x 256 wide, context {args.context}, global batch {args.batch}, fp32, {args.rounds} rounds; "
        f"largest gradient difference {max(d for _, _, d in ranks):.2e}"
    )
    header = [
        "variant",
        "loss (mean of ranks)",
        "peak MiB, rank 0 / 1",
        "peak vs plain",
        "ms/step",
        "time vs plain",
        "rounds",
    ]
    print(_common.table(header, rows))


if __name__ == "__main__":
    main()
