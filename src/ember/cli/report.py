"""``ember report``: one self-contained HTML page about a run (plots embedded), for a browser."""

from __future__ import annotations

import argparse

HELP = """Write one self-contained HTML file about a finished run: its metrics with intervals beside
baselines, loss / metric / learning-rate curves, what the run's task shows of its outputs (a confusion
matrix and reliability diagram, predictions against the truth, per-class figures, the worst mistakes
or translations), check findings and run facts (config, data hash, environment). Plots are embedded
as PNG, so the file can be mailed or archived alone.

examples:
  ember report latest                       # writes runs/<id>/report.html
  ember report RUN --split val --out val.html
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write a self-contained HTML report of a run",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", help="run id, unique prefix, or 'latest'")
    p.add_argument(
        "--split", default="test", choices=["train", "val", "test"], help="which split (default test)"
    )
    p.add_argument(
        "--data", metavar="NPZ", help="report on these arrays instead of a split (.npz with 'x' and 'y')"
    )
    p.add_argument("--out", metavar="FILE", help="where to write (default <run folder>/report.html)")
    p.add_argument("--runs-dir", metavar="DIR", help="the run store (default $EMBER_RUNS or ./runs)")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ember.evaluate import write_report

    path = write_report(
        args.run,
        args.out,
        split=args.split,
        runs_dir=args.runs_dir,
        n_resamples=args.resamples,
        seed=args.seed,
        data=args.data,
    )
    print(f"report {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0
