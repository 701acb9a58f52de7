"""``ember explain``: attributions of a run's predictions, overlaid, sanity-checked, in one HTML page."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HELP = """Explain a finished classifier's predictions on some examples of a split. The methods follow
from the inputs: images get integrated gradients, saliency, Grad-CAM (CNNs) and attention rollout
(transformers); token ids get integrated gradients on the embeddings and attention rollout; table
rows get per-feature integrated gradients and saliency by column name. Each method goes through the
cascading-randomization sanity check (Adebayo et al. 2018) and is flagged when it fails;
integrated gradients report their completeness error per input.

examples:
  ember explain latest --input 0:16 -o explain.html
  ember explain RUN --input 3,17,42 --steps 100 --no-sanity
  ember explain RUN --input 0:8 --split val --json
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain", help="attributions with overlays and a sanity check", description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("run", help="run id, unique prefix, or 'latest'")
    p.add_argument(
        "--input", default="0:8", help="examples of the split: START:STOP, a list 1,5,9, or one index"
    )
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="default test")
    p.add_argument("--steps", type=int, default=200, help="integrated-gradients steps (default 200)")
    p.add_argument("--max-batch", type=int, default=512, help="most rows in one forward pass (bounds memory)")
    p.add_argument("--no-sanity", action="store_true", help="skip the randomization sanity check")
    p.add_argument("-o", "--out", default="explain.html", help="the HTML page (default explain.html)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--runs-dir", metavar="DIR", help="the run store (default $EMBER_RUNS or ./runs)")
    p.set_defaults(func=run)


def parse_indices(text: str) -> list[int]:
    """``0:16`` -> 0..15; ``1,5,9`` -> those; ``7`` -> [7]."""
    from ember.cli import UserError

    try:
        if ":" in text:
            start, _, stop = text.partition(":")
            indices = list(range(int(start or 0), int(stop)))
        else:
            indices = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--input {text!r}: expected START:STOP, a list like 1,5,9, or one index") from None
    if not indices:
        raise UserError(f"--input {text!r} selects no example")
    return indices


def run(args: argparse.Namespace) -> int:
    from ember.cli import UserError
    from ember.responsible.explain_html import render
    from ember.responsible.explain_run import explain_run
    from ember.responsible.fairness_run import NotApplicableError

    try:
        result = explain_run(
            args.run, parse_indices(args.input), split=args.split, steps=args.steps,
            sanity=not args.no_sanity, runs_dir=args.runs_dir, max_batch=args.max_batch,
        )  # fmt: skip
    except NotApplicableError as e:
        raise UserError(str(e)) from None
    Path(args.out).write_text(render(result))
    summary = summary_of(result)
    _save_in_run(result, summary, args.runs_dir)
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(
            f"explained {len(result.indices)} {result.kind} inputs of run {result.run_id}: {', '.join(result.methods)}"
        )
        if summary["ig_completeness_error_max"] is not None:
            print(f"integrated gradients: completeness error max {summary['ig_completeness_error_max']:.2e}")
        for name, s in summary["sanity"].items():
            verdict = "passes" if s["passed"] else "FAILS (explains the input, not the model)"
            print(f"sanity  {name:22s} mean rank correlation over the cascade {s['score']:+.3f}: {verdict}")
        print(f"wrote {args.out}")
    return 0


def _save_in_run(result: Any, summary: dict[str, Any], runs_dir: str | None) -> None:
    """``explain.json`` and ``explain-example.png`` in the run folder, for `ember card`."""
    from ember.responsible.explain_html import example_png
    from ember.track import RunStore

    folder = RunStore(runs_dir).get(result.run_id).folder
    (folder / "explain.json").write_text(json.dumps(summary, indent=1))
    png = example_png(result)
    if png is not None:
        (folder / "explain-example.png").write_bytes(png)


def summary_of(result: Any) -> dict[str, Any]:
    """Methods, sanity verdicts and the IG completeness error, JSON-ready."""
    methods = result.methods
    ig = methods.get("integrated gradients")
    err = ig.completeness_error if ig is not None else None
    return {
        "run": result.run_id,
        "kind": result.kind,
        "indices": result.indices,
        "methods": list(methods),
        "ig_completeness_error": None if err is None else err.tolist(),
        "ig_completeness_error_max": None if err is None else float(err.max()),
        "sanity": {n: m.sanity.to_dict() for n, m in methods.items() if m.sanity is not None},
        "flagged": result.flagged(),
    }
