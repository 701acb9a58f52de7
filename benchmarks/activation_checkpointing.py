"""Activation checkpointing: the same loss and gradients, lower peak memory, at what cost in time.

ember's ``gpt`` (4 layers, 4 heads, 256 wide, context 256, batch 16) takes one training step
(forward, cross-entropy, backward) with and without ``ember.nn.checkpointing.apply``, from the
same weights and batch.

Peak memory is the peak of live tensor bytes during the step, from ``torch.profiler``'s allocation
and free events (``profile_memory=True``): every CPU tensor allocation is an event with its size,
every free one with the negative size, so their running sum over time is the bytes held, and its
maximum the peak, counted from the step's start (weights and the batch are already there and not
counted). Process RSS would mix in the allocator's caching and Python; this counts tensors only.

Time per step is the median of ``--rounds`` steps of each, taken in turns; the time ratio is the
median of the rounds' ratios. ``--layers 24`` gives the 24-block model.

Usage:
    python benchmarks/activation_checkpointing.py
    python benchmarks/activation_checkpointing.py --layers 24
    python benchmarks/activation_checkpointing.py --batch 32 --precision bf16
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable

import _common
import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile

import ember
from ember.nn import checkpointing
from ember.train.precision import resolve_precision


def peak_bytes(fn: Callable[[], object]) -> int:
    """Peak of live CPU tensor bytes during ``fn()`` (see the module docstring)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]  # type: ignore[union-attr]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    args = parser.parse_args(argv)
    _common.set_threads(args.threads)
    print(_common.machine())
    torch.manual_seed(0)
    plain = ember.models.create("gpt", vocab_size=65, block_size=256, num_layers=args.layers)
    ckpt = checkpointing.apply(copy.deepcopy(plain))
    ids = torch.randint(0, 65, (args.batch, 256))
    target = torch.randint(0, 65, (args.batch, 256))
    precision = resolve_precision(args.precision, torch.device("cpu"))

    def step(model: nn.Module) -> float:
        model.zero_grad(set_to_none=True)
        with precision.autocast():
            loss = F.cross_entropy(model(ids).float().flatten(0, 1), target.flatten())
        loss.backward()
        return loss.item()

    losses = {name: step(model) for name, model in (("plain", plain), ("checkpointed", ckpt))}
    grad_diff = max(
        (p.grad - q.grad).abs().max().item() for p, q in zip(plain.parameters(), ckpt.parameters())
    )  # type: ignore[operator]
    peaks = {"plain": peak_bytes(lambda: step(plain)), "checkpointed": peak_bytes(lambda: step(ckpt))}
    seconds: dict[str, list[float]] = {"plain": [], "checkpointed": []}
    for r in range(args.rounds):
        for name in _common.rotate(list(seconds), r):
            start = time.perf_counter()
            step(plain if name == "plain" else ckpt)
            seconds[name].append(time.perf_counter() - start)
    rows = [
        [
            name,
            f"{losses[name]:.6f}",
            f"{peaks[name] / 2**20:,.1f}",
            f"{peaks[name] / peaks['plain']:.2f}x",
            f"{_common.median(seconds[name]) * 1e3:.0f}",
            f"{_common.median([s / b for s, b in zip(seconds[name], seconds['plain'])]):.2f}x",
        ]
        for name in seconds
    ]
    print()
    print(
        f"GPT {args.layers} layers x 4 heads x 256 wide, context 256, batch {args.batch}, {args.precision}, "
        f"{args.threads} threads; largest gradient difference {grad_diff:.2e}"
    )
    print(_common.table(["variant", "loss", "peak MiB", "peak vs plain", "ms/step", "time vs plain"], rows))


if __name__ == "__main__":
    main()
