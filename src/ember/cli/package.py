"""``ember package``: a finished run → one self-describing, verifiable bundle file."""

from __future__ import annotations

import argparse

HELP = """Package a finished run as a bundle: one .ember file holding the weights (safetensors), the
resolved config, the run's model spec (how the model is rebuilt, its task and inputs), data/code/
environment metadata, metrics, a reference profile of the training data (for drift), the tokenizer
of a text model, the model card when the run has one and, with --onnx, the model's ONNX graph; with
the sha256 of every file. Works on every run: a recipe's or one trained from Python.

Load it back with `ember.load("digits.ember")` (every hash verified, no pickle), push it to the model
registry with `ember registry push`, or export it with `ember export`.

examples:
  ember package latest -o digits.ember
  ember package digits-cnn-20250101-120000-ab12 -o bundles/        # writes bundles/<name>.ember
  ember package latest -o digits.ember --card CARD.md
  ember package latest -o gpt.ember --onnx                          # also carries model.onnx
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "package",
        help="package a finished run as a verifiable .ember bundle",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", help="run id, unique prefix, or 'latest'")
    p.add_argument("-o", "--out", required=True, metavar="FILE", help="the bundle file (or a folder)")
    p.add_argument("--runs-dir", metavar="DIR", help="the run store (default $EMBER_RUNS or ./runs)")
    p.add_argument("--card", metavar="FILE", help="a model card (markdown) to include")
    p.add_argument(
        "--onnx", action="store_true", help="also carry model.onnx, exported and verified in ONNX Runtime"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ember.deploy.bundle import open_bundle, package

    path = package(args.run, args.out, runs_dir=args.runs_dir, card=args.card, onnx=args.onnx)
    bundle = open_bundle(path)
    meta = bundle.meta
    print(f"packaged run {meta['run']['id']} ({meta['model']['name']}, {meta['task']})")
    for name, digest in sorted((bundle.files or {}).items()):
        print(f"  {name:20s} sha256 {digest[:16]}")
    print(f"model code: {meta['model']['code']}")
    note = (meta.get("profile") or {}).get("note")
    if note:
        print(f"drift profile: {note}")
    print(f"bundle {path} {path.stat().st_size} B sha256 {bundle.sha256}")
    return 0
