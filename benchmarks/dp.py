"""What DP-SGD costs per step: ember's per-example clipping against a non-private step, and Opacus's.

One optimizer step on the same model and batch (forward, cross-entropy, backward, SGD update):

- ``plain``: the non-private step, the baseline;
- ``ember-dp``: `ember.responsible.privacy.make_private`: layer hooks keep inputs and output
  gradients, per-example norms and the clipped sum come from them, noise is added;
- ``opacus-hooks``: Opacus 1.6's ``PrivacyEngine.make_private`` (per-example gradients materialized
  by its hooks), if Opacus is installed;
- ``opacus-ghost``: the same with ``grad_sample_mode="ghost"`` (ghost clipping: two backward passes).

Variants take turns, the order rotated each round; each round times ``--steps`` steps of each after
a warm-up, and the ratio to ``plain`` is the median over rounds of that round's ratio.

Usage:
    python benchmarks/dp.py                       # dp_cnn (Fashion-MNIST's), batch 256 and 2048
    python benchmarks/dp.py --batch 512 --rounds 7 --threads 2
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from _common import machine, median, rotate, set_threads, spread, table

from ember.models import create
from ember.responsible.privacy import make_private

Step = Callable[[], None]


def batches(batch: int, n: int = 60_000) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def plain(x: torch.Tensor, y: torch.Tensor, batch: int, model_name: str) -> Step:
    model = create(model_name, image_size=28)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    xb, yb = x[:batch], y[:batch]

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(xb), yb).backward()
        opt.step()

    return step


def ember_dp(x: torch.Tensor, y: torch.Tensor, batch: int, model_name: str) -> Step:
    from ember.data import ArrayData, make_loader

    model = create(model_name, image_size=28)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loader = make_loader(ArrayData(x, y), batch_size=batch, shuffle=True)
    model, opt, poisson, _ = make_private(
        model, opt, loader, epochs=1, noise_multiplier=1.0, max_grad_norm=0.1
    )
    xb, yb = x[:batch], y[:batch]  # the same fixed batch as plain (Poisson batches vary in size)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(xb), yb).backward()
        opt.step()

    return step


def opacus(x: torch.Tensor, y: torch.Tensor, batch: int, model_name: str, mode: str) -> Step:
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    model = create(model_name, image_size=28)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch)
    engine = PrivacyEngine()
    criterion = torch.nn.CrossEntropyLoss()
    kwargs = {"criterion": criterion, "grad_sample_mode": "ghost"} if mode == "ghost" else {}
    out = engine.make_private(
        module=model, optimizer=opt, data_loader=loader, noise_multiplier=1.0, max_grad_norm=0.1, **kwargs
    )
    model, opt = out[0], out[1]
    if mode == "ghost":
        criterion = out[2]
    xb, yb = x[:batch], y[:batch]

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        criterion(model(xb), yb).backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="dp_cnn")
    parser.add_argument("--batch", type=int, nargs="+", default=[256, 2048])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-opacus", action="store_true")
    args = parser.parse_args()
    set_threads(args.threads)
    logging.getLogger("opacus").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")  # Opacus's deprecation and secure-RNG notices
    print(machine())
    x, y = batches(max(args.batch))
    rows = []
    for batch in args.batch:
        variants: dict[str, Step] = {
            "plain": plain(x, y, batch, args.model),
            "ember-dp": ember_dp(x, y, batch, args.model),
        }
        if not args.no_opacus:
            try:
                variants["opacus-hooks"] = opacus(x, y, batch, args.model, "hooks")
                variants["opacus-ghost"] = opacus(x, y, batch, args.model, "ghost")
            except ImportError:
                pass
        for step in variants.values():  # warm-up
            for _ in range(2):
                step()
        times: dict[str, list[float]] = {name: [] for name in variants}
        for r in range(args.rounds):
            for name in rotate(list(variants), r):
                start = time.perf_counter()
                for _ in range(args.steps):
                    variants[name]()
                times[name].append((time.perf_counter() - start) / args.steps)
        for name in variants:
            ratios = [t / p for t, p in zip(times[name], times["plain"])]
            rows.append(
                [
                    args.model,
                    str(batch),
                    name,
                    f"{median(times[name]) * 1e3:.1f}",
                    f"{median(ratios):.2f}x",
                    spread(ratios),
                ]
            )
    print(table(["model", "batch", "variant", "ms/step", "vs plain", "round spread"], rows))


if __name__ == "__main__":
    main()
