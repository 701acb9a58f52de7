"""``ember find lr|batch-size``: a learning rate from a range test; the largest batch under a memory budget."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = """Finders for two settings people guess at.

  lr          the LR range test: the learning rate grows exponentially over a short run from the
              recipe's initial weights; the loss curve is plotted and the learning rate of its
              steepest fall is suggested (set it with optim.lr=...). The run store is not touched.
  batch-size  the peak memory of a training step at growing batch sizes (each in a fresh process)
              and the largest that stays under --memory-mb (set it with data.batch_size=...).

examples:
  ember find lr configs/digits-cnn.yaml                     # writes lr-find.png
  ember find lr configs/shakespeare-char-gpt.yaml --steps 200 --end-lr 1
  ember find batch-size configs/fashion-resnet.yaml --memory-mb 4000
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "find",
        help="find a learning rate (range test) or the largest batch size under a memory budget",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("what", choices=["lr", "batch-size"], help="what to find")
    p.add_argument("config", help="a YAML recipe (configs/...)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.width=64")
    p.add_argument("--steps", type=int, default=100, help="lr: steps of the range test (default 100)")
    p.add_argument("--start-lr", type=float, default=1e-7, help="lr: first learning rate (default 1e-7)")
    p.add_argument("--end-lr", type=float, default=10.0, help="lr: last learning rate (default 10)")
    p.add_argument(
        "--plot", default="lr-find.png", metavar="FILE", help="lr: the curve (default lr-find.png)"
    )
    p.add_argument("--memory-mb", type=float, help="batch-size: the memory budget in MB (required)")
    p.add_argument("--start", type=int, default=8, help="batch-size: the first batch tried (default 8)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ember.recipe.find import find_batch_size, find_lr

    if args.what == "lr":
        finding = find_lr(
            args.config, args.overrides, start_lr=args.start_lr, end_lr=args.end_lr, steps=args.steps
        )
        plot = finding.plot(Path(args.plot))
        print(f"LR range test: {len(finding.lrs)} steps from {finding.lrs[0]:.2g} to {finding.lrs[-1]:.2g}")
        if finding.stopped:
            print(f"  stopped: {finding.stopped}")
        print(f"suggested learning rate {finding.suggestion:.3g}  (optim.lr={finding.suggestion:.3g})")
        print(f"curve {plot}")
        return 0
    if args.memory_mb is None or args.memory_mb <= 0:
        raise ValueError("ember find batch-size needs --memory-mb, the budget in MB (e.g. --memory-mb 4000)")
    result = find_batch_size(args.config, args.overrides, memory_mb=args.memory_mb, start=args.start)
    for size, peak in sorted(result.peak_mb.items()):
        mark = "fits" if peak <= args.memory_mb else "over"
        print(f"  batch {size:6d}: peak {peak:9.1f} MB  {mark}")
    if result.batch_size is None:
        print(
            f"no batch of {args.start} or more fits {args.memory_mb:g} MB; try --start 1 or a smaller model"
        )
        return 1
    print(
        f"largest batch under {args.memory_mb:g} MB: {result.batch_size}  (data.batch_size={result.batch_size})"
    )
    return 0
