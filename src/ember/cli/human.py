"""``ember human``: export a blinded rating sheet of runs' outputs; import the ratings."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Literal

HELP = """Human evaluation of model outputs.

`export` writes a blinded, shuffled sheet of test examples with the runs' outputs: sheet.csv (fill
'rating' and 'rater'), form.html (the same as an offline page with a Download CSV button) and
key.json (which run is behind each row: keep it away from raters). `import` unblinds filled sheets
and prints win rates with confidence intervals and inter-rater agreement (Cohen's and Fleiss'
kappa, Krippendorff's alpha).

examples:
  ember human export RUN_A --pairwise RUN_B --n 50 --out human-eval
  ember human export RUN --likert --n 40              # rate one run's outputs 1..5
  ember human export RUN_A --likert RUN_B --n 40      # both runs' outputs, shuffled together
  ember human import human-eval/alice.csv human-eval/bob.csv --key human-eval/key.json
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "human",
        help="blinded human rating sheets: export, then import win rates and agreement",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    exp = verbs.add_parser(
        "export",
        help="write sheet.csv, form.html and key.json",
        description="Export a blinded rating sheet.\n\nexample:\n  ember human export RUN_A --pairwise RUN_B --n 50",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    exp.add_argument("run", help="run id, unique prefix, or 'latest' (system A)")
    exp.add_argument("--pairwise", metavar="RUN_B", help="compare with this run: which output is better?")
    exp.add_argument(
        "--likert",
        nargs="?",
        const="",
        metavar="RUN_B",
        help="rate outputs 1..SCALE instead (of RUN, and of RUN_B when given)",
    )
    exp.add_argument("--n", type=int, default=50, help="examples to rate (default 50; 0 for all)")
    exp.add_argument("--split", default="test", choices=["train", "val", "test"], help="default test")
    exp.add_argument("--out", default="human-eval", metavar="DIR", help="output folder (default human-eval)")
    exp.add_argument("--seed", type=int, default=0, help="seeds the sample, row order and sides")
    exp.add_argument("--show-reference", action="store_true", help="show raters the true label")
    exp.add_argument(
        "--only-different", action="store_true", help="pairwise: only examples where the outputs differ"
    )
    exp.add_argument("--force", action="store_true", help="overwrite an existing sheet and key in --out")
    exp.add_argument("--runs-dir", metavar="DIR", help="the run store (default $EMBER_RUNS or ./runs)")
    exp.set_defaults(func=run_export)
    imp = verbs.add_parser(
        "import",
        help="win rates with confidence intervals, and agreement",
        description="Unblind filled sheets and summarize them.\n\nexample:\n"
        "  ember human import alice.csv bob.csv --key human-eval/key.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    imp.add_argument("ratings", nargs="+", help="filled sheet CSV file(s), one or more raters each")
    imp.add_argument("--key", metavar="JSON", help="the sheet's key.json (default: beside the first file)")
    imp.add_argument("--confidence", type=float, default=0.95, help="interval level (default 0.95)")
    imp.add_argument("--seed", type=int, default=0, help="seeds the bootstrap")
    imp.add_argument("--json", action="store_true", help="print JSON for scripts")
    imp.set_defaults(func=run_import)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def run_export(args: argparse.Namespace) -> int:
    from ember.errors import UserError
    from ember.evaluate.human import export_runs

    if args.pairwise and args.likert is not None:
        raise UserError("choose one of --pairwise RUN_B and --likert [RUN_B]")
    if not args.pairwise and args.likert is None:
        raise UserError("say what to rate: --pairwise RUN_B (A/B) or --likert [RUN_B] (1..5 scale)")
    if args.only_different and not args.pairwise:
        raise UserError("--only-different needs --pairwise RUN_B")
    out = Path(args.out)
    if (out / "key.json").exists() and not args.force:
        raise UserError(
            f"{out / 'key.json'} exists: a sheet already handed out would lose its key. "
            "Choose another --out, or pass --force"
        )
    mode: Literal["pairwise", "likert"] = "pairwise" if args.pairwise else "likert"
    sheet = export_runs(
        args.run,
        args.pairwise or args.likert or None,
        out,
        mode=mode,
        n=args.n or None,
        split=args.split,
        seed=args.seed,
        runs_dir=args.runs_dir,
        show_reference=args.show_reference,
        only_different=args.only_different,
    )
    print(f"{mode} sheet {sheet.sheet_id}: {sheet.rows} rows to rate")
    print(f"  {sheet.sheet}   fill 'rating' ({'1, 2 or tie' if mode == 'pairwise' else '1..5'}) and 'rater'")
    print(f"  {sheet.form}   the same as a page: open it offline, rate, Download CSV")
    print(f"  {sheet.key}   which run is which: keep it from the raters")
    print(f"then: ember human import RATINGS.csv ... --key {sheet.key}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from ember.evaluate.human import import_ratings

    result = import_ratings(args.ratings, args.key, confidence=args.confidence, seed=args.seed)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.summary())
    return 0
