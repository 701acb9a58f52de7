"""``ember data``: fetch and list the data sets ember can get for you."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="fetch (sha256-verified) and list data sets",
        description="Fetch pinned data sets into the cache ($EMBER_DATA or ~/.cache/ember), verifying sha256.\n\n"
        "examples:\n  ember data list\n  ember data get fashion-mnist",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    get = verbs.add_parser("get", help="download, verify and cache a data set")
    get.add_argument("name", help="e.g. fashion-mnist, mnist-10k")
    get.set_defaults(func=run_get)
    ls = verbs.add_parser("list", help="data sets that can be fetched, and registered dataset readers")
    ls.set_defaults(func=run_list)


def run_get(args: argparse.Namespace) -> int:
    from ember.data import fetch

    path = fetch(args.name)
    print(f"{args.name}: {path}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from ember.data import available_sources, list_datasets

    print("fetchable (ember data get NAME):")
    for name, text in available_sources().items():
        print(f"  {name:16s} {text}")
    print("dataset readers (data.name in a config):")
    for name in list_datasets():
        print(f"  {name}")
    return 0
