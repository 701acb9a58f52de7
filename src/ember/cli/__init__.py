"""The ``ember`` command: one entry point, a subcommand per verb, ``--help`` on each.

Each family lives in its own file and exposes ``register(subparsers)``; this table is the whole
wiring. Errors a user can fix (a bad config key, an unknown run) print one clear line and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ember.cli import data, evaluate, listing, runs, train

FAMILIES: dict[str, Callable[[argparse._SubParsersAction], None]] = {  # type: ignore[type-arg]
    "train": train.register,
    "eval": evaluate.register,
    "runs": runs.register,
    "list": listing.register,
    "data": data.register,
}

EPILOG = """examples:
  ember train configs/digits-cnn.yaml trainer.epochs=3 optim.lr=0.01
  ember runs                      # every run: id, config, data hash, best metric, time
  ember eval latest --split test
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
