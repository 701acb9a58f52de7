"""The ``ember`` command: one entry point, a subcommand per verb, ``--help`` on each.

Each family lives in its own file and exposes ``register(subparsers)``; this table is the whole
wiring. Errors a user can fix (a bad config key, an unknown run) print one clear line and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ember.cli import check as check_cli
from ember.cli import compress as compress_cli
from ember.cli import (
    data,
    evaluate,
    export,
    generate,
    listing,
    package,
    registry,
    report,
    runs,
    score,
    serve,
    train,
)
from ember.cli import human as human_cli

FAMILIES: dict[str, Callable[[argparse._SubParsersAction], None]] = {  # type: ignore[type-arg]
    "train": train.register,
    "eval": evaluate.register,
    "report": report.register,
    "check": check_cli.register,
    "human": human_cli.register,
    "runs": runs.register,
    "list": listing.register,
    "data": data.register,
    "package": package.register,
    "registry": registry.register,
    "export": export.register,
    "serve": serve.register,
    "monitor": serve.register_monitor,
    "generate": generate.register,
    "caption": generate.register_caption,
    "score": score.register,
    "compress": compress_cli.register,
    "plan": compress_cli.register_plan,
}

EPILOG = """examples:
  ember train configs/digits-cnn.yaml trainer.epochs=3 optim.lr=0.01
  ember runs                      # every run: id, config, data hash, best metric, time
  ember eval latest --split test
  ember report latest             # one HTML page: metrics, baselines, plots, checks
  ember check latest              # overfitting, leakage, shift, imbalance findings
  ember human export RUN_A --pairwise RUN_B --n 50
  ember list models
  ember data get fashion-mnist
"""


class UserError(Exception):
    """A mistake the user can fix; printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ember",
        description="ember: train, evaluate, track and ship deep-learning models.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in FAMILIES.values():
        register(sub)
    return parser


def _version() -> str:
    from ember import __version__

    return f"ember {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ember`` command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    from ember.config import ConfigError
    from ember.data import SourceUnavailableError
    from ember.track import RunNotFoundError
    from ember.train import CheckpointError, NonFiniteLossError

    try:
        return int(args.func(args) or 0)
    except (
        UserError,
        ConfigError,
        RunNotFoundError,
        CheckpointError,
        SourceUnavailableError,
        FileNotFoundError,
        KeyError,
        ValueError,  # DataError and ChecksumError are ValueErrors
    ) as e:
        print(f"ember {args.command}: error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        print(f"ember {args.command}: training stopped: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"ember {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
