"""Fashion-MNIST ResNet recipe: time per epoch with the optimizations ember chooses, against none of them.

Two variants of ``configs/fashion-resnet.yaml``, the same seed, data and model:

- ``unoptimized``: fp32, NCHW convolutions, the for-loop AdamW (``trainer.precision=fp32
  model.channels_last=false optim.implementation=for-loop``);
- ``chosen``: the recipe as committed: ``precision: auto`` (bf16 where its matmuls measure faster),
  channels-last weights, the optimizer implementation chosen by measurement (``auto``); with
  ``--compile`` a third variant adds ``trainer.compile=true``; with ``--each``, the chosen settings
  with fp32 instead of ``auto`` and with NCHW instead of channels-last, to tell which choice pays.

Time: each variant trains ``N1`` and ``N2`` optimizer steps through ``ember.fit`` (run store,
validation, checkpoint and test included); the marginal ``(t(N2) - t(N1)) / (N2 - N1)`` is its time per
step, so everything paid once per fit cancels, and time per epoch is that times the recipe's steps per
epoch. Variants take turns for ``--rounds`` rounds, order rotated; the speed-up is the median of
per-round ratios. Accuracy: with ``--epochs E`` each variant then trains E whole epochs once and is
scored on the official test split, so "same accuracy" is checked on the same budget.

Usage:
    python benchmarks/resnet_epoch.py                          # 5 rounds, steps 10 and 50, 2 threads
    python benchmarks/resnet_epoch.py --rounds 5 --epochs 2    # and test accuracy after 2 epochs each
    python benchmarks/resnet_epoch.py --each                   # which of the choices pays
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
import warnings
from pathlib import Path

import _common

import ember
from ember.config import load_config

CONFIG = _common.ROOT / "configs" / "fashion-resnet.yaml"
VARIANTS = {
    "unoptimized": {
        "trainer.precision": "fp32",
        "model.channels_last": False,
        "optim.implementation": "for-loop",
    },
    "chosen": {},
    "chosen, fp32": {"trainer.precision": "fp32"},
    "chosen, NCHW": {"model.channels_last": False},
    "chosen+compile": {"trainer.compile": True},
}


def fit(variant: str, tmp: Path, **overrides: object) -> ember.FitResult:
    """The recipe with ``variant``'s settings and ``overrides``, trained into a scratch run store."""
    return ember.fit(
        str(CONFIG),
        {**VARIANTS[variant], "trainer.seed": 0, **overrides},
        runs_dir=tmp / "runs",
        progress=False,
    )


def timed(variant: str, steps: int, tmp: Path) -> float:
    start = time.perf_counter()
    fit(variant, tmp, **{"trainer.max_steps": steps, "trainer.epochs": 1})
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", default="10,50", help="N1,N2 optimizer steps (marginal time per step)")
    parser.add_argument("--epochs", type=int, default=0, help="then train each variant this many epochs")
    parser.add_argument(
        "--compile", action="store_true", help="also time the recipe with trainer.compile=true"
    )
    parser.add_argument(
        "--each", action="store_true", help="also the chosen settings less one of them (which one pays)"
    )
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    _common.set_threads(args.threads)
    print(_common.machine())
    n1, n2 = (int(v) for v in args.steps.split(","))
    variants = [v for v in VARIANTS if (args.compile or "compile" not in v) and (args.each or "," not in v)]
    cfg = load_config(str(CONFIG))
    per_epoch = math.ceil(60_000 * (1 - cfg.data.val_fraction) / cfg.data.batch_size)
    per_step: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for v in variants:  # untimed warm-up: imports, data cache, oneDNN kernels, the measured choices
            timed(v, 2, tmp)
        for r in range(args.rounds):
            for v in _common.rotate(variants, r):
                per_step[v].append((timed(v, n2, tmp) - timed(v, n1, tmp)) / (n2 - n1))
            print(f"round {r + 1}/{args.rounds} done", flush=True)
        accuracy = {}
        for v in variants if args.epochs else []:
            result = fit(v, tmp, **{"trainer.epochs": args.epochs})
            accuracy[v] = result.metrics.get("test/accuracy", float("nan"))
    rows = []
    base = per_step["unoptimized"]
    for v in variants:
        speedup = [b / t for t, b in zip(per_step[v], base)]
        row = [
            v,
            f"{_common.median(per_step[v]) * 1e3:.0f}",
            f"{_common.median(per_step[v]) * per_epoch:.0f}",
            f"{_common.median(speedup):.2f}x",
            _common.spread(speedup),
        ]
        if args.epochs:
            row.append(f"{accuracy[v]:.4f}")
        rows.append(row)
    header = ["variant", "ms/step", "s/epoch", "speed-up", "range"]
    if args.epochs:
        header.append(f"test accuracy after {args.epochs} epochs")
    print()
    print(
        f"configs/fashion-resnet.yaml, {per_epoch} steps an epoch, {args.threads} threads, "
        f"steps {n1} and {n2}, {args.rounds} rounds"
    )
    print(_common.table(header, rows))


if __name__ == "__main__":
    main()
