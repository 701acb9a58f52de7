"""``ember card``: a model card from a run (or a bundle), in Markdown and HTML."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = """Write a model card: intended use, data and its fingerprint, metrics with intervals beside
baselines, per-group metrics (from `ember audit fairness`), explanation examples (from `ember
explain`), check findings, limitations, the privacy budget when there is one, and the training
compute with an energy estimate. Markdown at -o, HTML beside it (.html). For a run, the card is
also saved as the run's card.md, which `ember package` puts in the bundle.

examples:
  ember card latest -o card.md
  ember card RUN -o card.md --no-checks
  ember card model.ember -o card.md          # from a bundle alone (metrics without intervals)
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "card", help="write a model card (Markdown and HTML)", description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("run", help="run id, unique prefix, 'latest', or a bundle file (.ember)")
    p.add_argument(
        "-o", "--out", default="card.md", help="the Markdown file (default card.md); HTML beside it"
    )
    p.add_argument(
        "--split", default="test", choices=["train", "val", "test"], help="metrics on (default test)"
    )
    p.add_argument("--no-checks", action="store_true", help="leave out `ember check` findings (faster)")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument(
        "--watts-per-core", type=float, default=4.0, help="energy estimate's CPU power per core (default 4)"
    )
    p.add_argument("--runs-dir", metavar="DIR", help="the run store (default $EMBER_RUNS or ./runs)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ember.responsible.card import card_of_bundle, card_of_run
    from ember.responsible.fairness_run import NotApplicableError

    out = Path(args.out)
    if args.run.endswith(".ember") and Path(args.run).is_file():
        card = card_of_bundle(args.run)
        folder = None
    else:
        from ember.cli import UserError
        from ember.track import RunStore

        try:
            card = card_of_run(
                args.run, runs_dir=args.runs_dir, split=args.split, checks=not args.no_checks,
                n_resamples=args.resamples, watts_per_core=args.watts_per_core,
            )  # fmt: skip
        except NotApplicableError as e:
            raise UserError(str(e)) from None
        folder = RunStore(args.runs_dir).get(args.run).folder
    text = card.markdown()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".html").write_text(card.html())
    if folder is not None and (folder / "card.md").resolve() != out.resolve():
        (folder / "card.md").write_text(text)  # `ember package` puts it in the bundle
    print(
        f"wrote {out} and {out.with_suffix('.html')}" + (f"; saved as {folder / 'card.md'}" if folder else "")
    )
    return 0
