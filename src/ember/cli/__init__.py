"""The ``ember`` command: one entry point, a subcommand per verb, ``--help`` on each.

Each family lives in its own file and exposes ``register(subparsers)``; this table is the whole
wiring. Errors a user can fix (a bad config key, an unknown run) print one clear line and exit 2.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence

from ember.cli import audit as audit_cli
from ember.cli import card as card_cli
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
from ember.cli import explain as explain_cli
from ember.cli import federated as federated_cli
from ember.cli import find as find_cli
from ember.cli import gate as gate_cli
from ember.cli import human as human_cli
from ember.cli import init as init_cli
from ember.cli import privacy as privacy_cli
from ember.cli import profile as profile_cli
from ember.cli import safety as safety_cli
from ember.cli import sweep as sweep_cli
from ember.errors import UserError

FAMILIES: dict[str, Callable[[argparse._SubParsersAction], None]] = {
    "init": init_cli.register,
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
    "profile": profile_cli.register,
    "find": find_cli.register,
    "sweep": sweep_cli.register,
    "audit": audit_cli.register,
    "explain": explain_cli.register,
    "redact": safety_cli.register,
    "card": card_cli.register,
    "gate": gate_cli.register,
    "audit privacy": privacy_cli.register,
    "federated": federated_cli.register,
}

EPILOG = """examples:
  ember init data.csv --target label    # what is in the file, and a config that trains on it
  ember train configs/digits-cnn.yaml trainer.epochs=3 optim.lr=0.01
  ember runs                      # every run: id, config, data hash, best metric, time
  ember eval latest --split test
  ember report latest             # one HTML page: metrics, baselines, plots, checks
  ember check latest              # overfitting, leakage, shift, imbalance findings
  ember human export RUN_A --pairwise RUN_B --n 50
  ember list models
  ember data get fashion-mnist
  ember audit fairness RUN --sensitive sex,race   # per-group metrics, gaps with intervals
  ember explain RUN --input 0:16 -o explain.html  # attributions, overlays, sanity check
  ember card RUN -o card.md                       # model card, Markdown and HTML
  ember gate RUN --policy gate.yaml               # exit 1 when a release threshold fails
  ember redact data.jsonl -o clean.jsonl          # personal data found and masked
  ember audit privacy latest      # membership-inference attacks, beside the run's ε
"""


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
    from ember._version import __version__

    return f"ember {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ember`` command line; returns the exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # KEY=VALUE overrides after an option (`ember train data.csv --target y trainer.epochs=3`)
        if isinstance(getattr(args, "overrides", None), list) and all(
            "=" in e and not e.startswith("-") for e in extra
        ):
            args.overrides += extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    from ember.config import ConfigError
    from ember.data import SourceUnavailableError
    from ember.tasks.spec import NotApplicable
    from ember.track import RunNotFoundError, RunStoreError
    from ember.train import NonFiniteLossError, WeightsError

    try:
        return int(args.func(args) or 0)
    except (
        UserError,
        NotApplicable,
        ConfigError,
        RunNotFoundError,
        RunStoreError,
        WeightsError,  # a CheckpointError is one
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
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM after the final checkpoint (Interrupted)
        print(f"ember {args.command}: interrupted" + (f": {e}" if str(e) else ""), file=sys.stderr)
        return 128 + getattr(e, "signum", signal.SIGINT)  # 130 for SIGINT, 143 for SIGTERM


if __name__ == "__main__":
    sys.exit(main())
