"""``ember check``: overfitting, leakage, shift and imbalance findings for a run, or shift between two files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HELP = """Check a finished run for overfitting, leakage (duplicates across splits, label-revealing
features), distribution shift (train vs test) and class imbalance; or test two data files for shift.
Each finding has a severity (info, warning, error) and its evidence.

examples:
  ember check latest
  ember check RUN --checks leakage,imbalance --json
  ember check RUN --near embedding            # the model's features propose near duplicates
  ember check shift --reference train.npz --current new.npz
  ember check shift --reference a.npz --current b.npz --method mmd --alpha 0.01 --fail-on warning

.npz files hold an array 'x' (one example per row, any shape after the first axis) and optionally
'y' (integer labels, to also test the class prior).
"""

ORDER = {"error": 0, "warning": 1, "info": 2}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="overfitting, leakage, shift and imbalance findings",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", metavar="RUN|shift", help="a run id, unique prefix or 'latest'; or 'shift'")
    p.add_argument("--runs-dir", metavar="DIR", help="the run store (default $EMBER_RUNS or ./runs)")
    p.add_argument(
        "--checks",
        default="overfitting,leakage,shift,imbalance",
        help="comma-separated subset of overfitting,leakage,shift,imbalance (default all)",
    )
    p.add_argument(
        "--near",
        default="auto",
        choices=["auto", "pixel", "phash", "embedding"],
        help="how near duplicates are proposed (default auto: every pair, or perceptual hashes when large)",
    )
    p.add_argument(
        "--reference", metavar="NPZ", help="shift: the reference data (.npz with 'x', optional 'y')"
    )
    p.add_argument("--current", metavar="NPZ", help="shift: the data to compare with it")
    p.add_argument("--alpha", type=float, default=0.05, help="shift: false-alarm rate (default 0.05)")
    p.add_argument(
        "--method",
        default="all",
        choices=["all", "ks", "mmd", "classifier", "labels"],
        help="shift: which test (default all, Bonferroni-combined)",
    )
    p.add_argument("--permutations", type=int, default=500, help="shift: MMD permutations (default 500)")
    p.add_argument("--seed", type=int, default=0, help="seed of sampling and randomized tests")
    p.add_argument(
        "--fail-on",
        choices=["warning", "error"],
        help="exit with status 1 when a finding is at least this severe (for CI gates)",
    )
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ember.errors import UserError

    if args.target == "shift":
        if not args.reference or not args.current:
            raise UserError("ember check shift needs --reference A.npz and --current B.npz")
        findings = [_shift(args)]
        title = f"shift: {args.reference} -> {args.current}"
    else:
        if args.reference or args.current:
            raise UserError(
                "--reference/--current belong to `ember check shift`; a run is checked on its own splits"
            )
        from ember.evaluate.checks import run_checks

        checks = [c.strip() for c in args.checks.split(",") if c.strip()]
        findings = run_checks(
            args.target, runs_dir=args.runs_dir, checks=checks, near=args.near, seed=args.seed
        )
        title = f"checks of {findings[0].evidence.get('run', args.target) if findings else args.target}"
    if args.json:
        print(json.dumps([f.to_dict() for f in findings], indent=2, default=_jsonable))
    else:
        print(format_findings(findings, title))
    if args.fail_on:
        worst = min((ORDER[f.severity] for f in findings), default=2)
        return 1 if worst <= ORDER[args.fail_on] else 0
    return 0


def _shift(args: argparse.Namespace) -> Any:
    from ember.evaluate.checks import check_shift

    ref_x, ref_y = _load_npz(Path(args.reference))
    cur_x, cur_y = _load_npz(Path(args.current))
    return check_shift(
        ref_x,
        cur_x,
        y_reference=ref_y,
        y_current=cur_y,
        alpha=args.alpha,
        method=args.method,
        names=(Path(args.reference).name, Path(args.current).name),
        permutations=args.permutations,
        seed=args.seed,
    )


def _load_npz(path: Path) -> tuple[Any, Any]:
    import numpy as np

    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with np.load(path, allow_pickle=False) as data:
        if "x" not in data.files:
            raise ValueError(f"{path} has no array 'x' (it holds: {', '.join(data.files) or 'nothing'})")
        x = data["x"]
        y = data["y"] if "y" in data.files else None
    if y is not None and (y.ndim != 1 or len(y) != len(x)):
        raise ValueError(f"{path}: 'y' must hold one label per row of 'x'; got {y.shape} for {x.shape}")
    return x, y


def format_findings(findings: list[Any], title: str = "") -> str:
    """Findings, most severe first, each with a short rendering of its evidence."""
    lines = [title] if title else []
    counts = {s: sum(f.severity == s for f in findings) for s in ("error", "warning", "info")}
    for f in sorted(findings, key=lambda f: ORDER[f.severity]):
        lines.append(f"{f.severity.upper():8s} {f.name}: {f.message}")
        shown = {k: v for k, v in f.evidence.items() if k != "run"}
        if shown:
            lines.append("         evidence: " + _short(shown))
    lines.append(", ".join(f"{n} {s}{'s' if n != 1 else ''}" for s, n in counts.items()))
    return "\n".join(lines)


def _short(evidence: dict[str, Any], limit: int = 400) -> str:
    parts = []
    for key, value in evidence.items():
        if isinstance(value, list) and len(value) > 5:
            value = [*value[:5], f"... {len(value)} in all"]
        text = json.dumps(value, default=_jsonable, separators=(",", ":"))
        parts.append(f"{key}={text if len(text) <= 160 else text[:157] + '...'}")
    out = " ".join(parts)
    return out if len(out) <= limit else out[: limit - 3] + "..."


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
