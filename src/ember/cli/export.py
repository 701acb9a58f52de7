"""``ember export``: a bundle (file or registry reference) → ONNX or torch.export, verified."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = """Export a bundle's model to ONNX or torch.export (.pt2) with a dynamic batch axis, then load
the export back (ONNX Runtime, torch.export.load), run it on several batch sizes and compare with the
eager model: the largest absolute difference is printed, and over --atol nothing is written.

REF is a bundle file, or a registry reference (NAME, NAME@3, NAME@production).

examples:
  ember export digits.ember --format onnx -o digits.onnx
  ember export digits-cnn@production --format onnx -o digits.onnx
  ember export digits-cnn@2 --format torch-export -o digits.pt2
"""


def register(sub: argparse._SubParsersAction) -> None:
    from ember.deploy.export import FORMATS

    p = sub.add_parser(
        "export",
        help="export a bundle to ONNX or torch.export, verified against the eager model",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("ref", help="a bundle file or a registry reference")
    p.add_argument("--format", required=True, choices=FORMATS, help="onnx or torch-export")
    p.add_argument("-o", "--out", metavar="PATH", help="the exported file (default: NAME.onnx / NAME.pt2)")
    p.add_argument("--registry", metavar="DIR", help="the registry (default $EMBER_REGISTRY)")
    p.add_argument("--batch-size", type=int, default=4, help="example batch size (default 4)")
    p.add_argument("--atol", type=float, default=1e-4, help="max abs error allowed (default 1e-4)")
    p.add_argument("--static-batch", action="store_true", help="fix the batch axis at --batch-size")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ember.deploy.bundle import open_bundle
    from ember.deploy.export import export
    from ember.errors import UserError

    bundle = open_bundle(args.ref, registry=args.registry)
    g = torch.Generator().manual_seed(0)
    example = torch.rand((max(1, args.batch_size), *bundle.input_shape), generator=g)
    suffix = ".onnx" if args.format == "onnx" else ".pt2"
    out = Path(args.out) if args.out else Path((bundle.meta.get("name") or "model") + suffix)
    options: dict[str, object] = {"dynamic_batch": not args.static_batch, "atol": args.atol}
    if args.format == "onnx":
        options["metadata"] = {
            "ember.bundle_sha256": bundle.sha256,
            "ember.model": str(bundle.meta["model"]["name"]),
            "ember.classes": ",".join(bundle.classes or []),
        }
    try:
        report = export(bundle.model, example, out, format=args.format, **options)
    except ImportError as e:
        raise UserError(str(e)) from None
    print(report.summary())
    return 0
