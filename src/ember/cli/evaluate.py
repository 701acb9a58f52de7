"""``ember eval``: metrics of a finished run on one of its splits."""

from __future__ import annotations

import argparse
import json

from ember.cli._format import metrics_block


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "eval",
        help="evaluate a finished run on its train/val/test split",
        description="Rebuild a run's data (the same saved splits) and final model, and print its metrics.\n\n"
        "examples:\n  ember eval latest --split test\n  ember eval digits-cnn-2026 --split val --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", help="run id, unique prefix, or 'latest'")
    p.add_argument(
        "--split", default="test", choices=["train", "val", "test"], help="which split (default test)"
    )
    p.add_argument("--runs-dir", metavar="DIR", help="the run store (default $EMBER_RUNS or ./runs)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ember.recipe import evaluate_run

    metrics = evaluate_run(args.run, args.split, runs_dir=args.runs_dir)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(f"{args.split} metrics of {args.run}:")
        print(metrics_block(metrics))
    return 0
