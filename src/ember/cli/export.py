"""``ember export``: a bundle (file or registry reference) → ONNX or torch.export, verified."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = """Export a bundle's model to ONNX or torch.export (.pt2) as its task lays it out (a detector's
maps as outputs, a translator's source and target as inputs), with a dynamic batch axis (and, for
token inputs, a dynamic length); then load the export back (ONNX Runtime, torch.export.load), run it
on fresh inputs of other batch sizes and lengths and compare with the eager model: the largest
absolute difference is printed, and over --atol nothing is written.

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
    p.add_argument("--batch-size", type=int, default=4, help="rows of the traced example (default 4)")
    p.add_argument("--atol", type=float, default=1e-4, help="max abs error allowed (default 1e-4)")
    p.add_argument("--static-batch", action="store_true", help="fix the batch axis at --batch-size")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ember.deploy.bundle import open_bundle
    from ember.deploy.export import export_model
    from ember.errors import UserError

    bundle = open_bundle(args.ref, registry=args.registry)
    suffix = ".onnx" if args.format == "onnx" else ".pt2"
    out = Path(args.out) if args.out else Path((bundle.meta.get("name") or "model") + suffix)
    if bundle.model is None:
        return _bundled_graph(bundle, args.format, out)
    options: dict[str, object] = {"dynamic_batch": not args.static_batch, "atol": args.atol}
    if args.format == "onnx":
        options["metadata"] = {
            "ember.bundle_sha256": bundle.sha256,
            "ember.model": str(bundle.meta["model"]["name"]),
            "ember.classes": ",".join(bundle.classes or []),
            "ember.spec": json.dumps(bundle.spec.to_dict()),
        }
    try:
        report = export_model(
            bundle.model,
            bundle.task,
            bundle.spec,
            out,
            format=args.format,
            batch_size=args.batch_size,
            **options,
        )
    except ImportError as e:
        raise UserError(str(e)) from None
    print(report.summary())
    return 0


def _bundled_graph(bundle: object, fmt: str, out: Path) -> int:
    """A bundle whose model has no code here: its model.onnx, verified against eager when packaged."""
    from ember.errors import UserError

    graph, meta = getattr(bundle, "onnx", None), getattr(bundle, "meta", {})
    if fmt != "onnx" or graph is None:
        raise UserError(
            "this bundle's model cannot be rebuilt here (no zoo name, no importable entry point), so only its "
            "model.onnx can be exported: use --format onnx"
        )
    from ember.train.checkpoint import atomic_write_bytes

    atomic_write_bytes(out, graph)
    checked = meta.get("onnx") or {}
    print(
        f"onnx {out} ({len(graph) / 1024:.1f} KiB): the bundle's model.onnx, verified against the eager model "
        f"when packaged (max abs error {checked.get('max_abs_error', float('nan')):.3g})"
    )
    return 0
