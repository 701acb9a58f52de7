"""``ember profile``: where a training step of a run's recipe spends its time, and its MFU."""

from __future__ import annotations

import argparse
import json

HELP = """Profile a few training steps of a finished run's recipe with torch.profiler (the run itself is
not changed: its weights are copied into a scratch run). Prints the time of one step by op category
(matmul, attention, norm/act, optimizer, data, elementwise, framework), the largest ops, and the model
FLOPs utilization: the share of this machine's measured matmul peak the steps reached.

To profile while training instead: ember train CONFIG trainer.profile=true (profile.json in the run).

examples:
  ember profile latest
  ember profile RUN --steps 20 --skip 5 --json
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help="time a run's training step by op category, with MFU",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", help="run id, unique prefix, or 'latest'")
    p.add_argument("--steps", type=int, default=10, help="steps profiled (default 10)")
    p.add_argument("--skip", type=int, default=5, help="warm-up steps before them (default 5)")
    p.add_argument("--json", action="store_true", help="print the profile as JSON")
    p.add_argument("--runs-dir", metavar="DIR", help="the run store (default $EMBER_RUNS or ./runs)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ember.recipe.profile import profile_run

    if args.steps < 1 or args.skip < 0:
        raise ValueError(f"--steps must be >= 1 and --skip >= 0; got {args.steps} and {args.skip}")
    result = profile_run(args.run, steps=args.steps, skip=args.skip, runs_dir=args.runs_dir)
    print(json.dumps(result.to_dict(), indent=1) if args.json else result.table())
    return 0
