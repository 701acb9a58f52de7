"""``ember init DATA``: say what a file or folder holds and write a config that trains on it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

HELP = """Look at a table (.csv, .tsv, .parquet), a JSONL file of texts, or a folder of class subfolders
(images or .txt files); print what is there (rows, columns and their kinds, missing values, classes
and their balance, image sizes) and write a config that trains on it.

examples:
  ember init adult.csv --target income        # writes adult.yaml
  ember init photos/                          # photos/cat/1.jpg, photos/dog/2.jpg ...
  ember init reviews.csv --target stars --text review
  ember train DATA --target COL               # init and train in one go (the config is kept with the run)
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "init",
        help="look at a data file or folder and write a config that trains on it",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("data", help="a table, a JSONL file, or a folder of class subfolders")
    add_data_options(p)
    p.add_argument(
        "--out", metavar="FILE", help="where to write the config (default: DATA's name + .yaml here)"
    )
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(func=run)


def add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", metavar="COL", help="the column to predict (tables and text files)")
    p.add_argument("--text", metavar="COL", help="the text column, for a table of texts to classify")


def survey_and_config(data: str, target: str | None, text: str | None) -> tuple[Any, dict[str, Any]]:
    """Print what ``data`` holds; return the survey and its starter config."""
    from ember.recipe.starter import check_target, starter_config, survey

    found = survey(data, target=target, text=text)
    check_target(found, target)
    print("\n".join(found.lines()))
    return found, starter_config(found)


def run(args: argparse.Namespace) -> int:
    from ember.cli import UserError
    from ember.recipe.starter import starter_yaml

    found, config = survey_and_config(args.data, args.target, args.text)
    out = Path(args.out) if args.out else Path(f"{Path(args.data).resolve().name.split('.')[0]}.yaml")
    if out.exists() and not args.force:
        raise UserError(f"{out} exists; pass --force to overwrite it, or --out FILE to write elsewhere")
    out.write_text(starter_yaml(found, config))
    print(
        f"wrote {out}: model {config['model']['name']}, up to {config['trainer']['epochs']} epochs "
        f"(early stopping on val/loss). Train it with: ember train {out}"
    )
    return 0
