"""``ember audit``: audits of a finished run (``fairness``: per-group metrics and gaps with intervals)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HELP = """Audit a finished run. `fairness` groups the run's predictions on a split by the data's
sensitive columns (several: each, and their intersection) and gives per-group accuracy, selection
rate, TPR, FPR and calibration (ECE), the demographic-parity and equalized-odds differences and
ratios, each with a bootstrap interval. --postprocess fits per-group decision rules on the
validation split and audits again under them: the gap closed beside the accuracy paid.

The audit is saved in the run folder (fairness.json; read by `ember card` and `ember gate`).

examples:
  ember audit fairness latest --sensitive sex,race
  ember audit fairness RUN --sensitive sex --postprocess demographic-parity -o fairness/
  ember audit fairness RUN --sensitive race --split val --json
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit",
        help="audit a run: fairness",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = p.add_subparsers(dest="audit", metavar="AUDIT", required=True)
    f = kinds.add_parser(
        "fairness", help="per-group metrics and gaps with intervals", description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    f.add_argument("run", help="run id, unique prefix, or 'latest'")
    f.add_argument(
        "--sensitive",
        help="comma-separated data columns, e.g. sex,race (default: the run's fairness.sensitive)",
    )
    f.add_argument("--split", default="test", choices=["train", "val", "test"], help="default test")
    f.add_argument(
        "--postprocess",
        choices=["demographic-parity", "equal-opportunity"],
        help="fit per-group thresholds on the val split and audit again under them",
    )
    f.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    f.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    f.add_argument(
        "-o", "--out", metavar="DIR", help="also write fairness.json and one PNG per attribute here"
    )
    f.add_argument("--json", action="store_true", help="print JSON for scripts")
    f.add_argument("--runs-dir", metavar="DIR", help="the run store (default $EMBER_RUNS or ./runs)")
    f.set_defaults(func=run_fairness)
    s = kinds.add_parser(
        "selective", help="risk-coverage of abstaining under a confidence threshold",
        description="Rank the test predictions by confidence: the error rate (risk) among those kept at each "
        "coverage, its area (AURC), and the threshold that meets --target-risk on the val split.",
    )  # fmt: skip
    s.add_argument("run", help="run id, unique prefix, or 'latest'")
    s.add_argument(
        "--target-risk", type=float, default=0.01, help="error rate allowed among answers (default 0.01)"
    )
    s.add_argument("--json", action="store_true", help="print JSON for scripts")
    s.add_argument("--runs-dir", metavar="DIR", help="the run store (default $EMBER_RUNS or ./runs)")
    s.set_defaults(func=run_selective)


def run_selective(args: argparse.Namespace) -> int:
    from ember.cli import UserError
    from ember.cli._format import table
    from ember.responsible.fairness_run import NotApplicableError
    from ember.responsible.selective import selective_run

    try:
        result = selective_run(args.run, target_risk=args.target_risk, runs_dir=args.runs_dir)
    except NotApplicableError as e:
        raise UserError(str(e).replace("fairness audits", "selective prediction needs")) from None
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"risk-coverage of run {result['run']} on test: AURC {result['aurc']:.4f}")
    print(
        table(
            ["coverage", "risk", "threshold"],
            [[p["coverage"], p["risk"], p["threshold"]] for p in result["curve"]],
        )
    )
    print(
        f"abstaining below {result['threshold']:.4f} (fitted on val for risk <= {args.target_risk}): test coverage "
        f"{result['test_coverage']:.4f}, risk {result['test_risk']:.4f}; serve with --abstain-below {result['threshold']:.4f}"
    )
    return 0


def run_fairness(args: argparse.Namespace) -> int:
    from ember.cli import UserError
    from ember.responsible.fairness_run import NotApplicableError, audit_run

    sensitive = [c.strip() for c in (args.sensitive or "").split(",") if c.strip()]
    if not sensitive:
        import yaml

        from ember.track import RunStore

        config = yaml.safe_load(RunStore(args.runs_dir).get(args.run).config) or {}
        sensitive = list((config.get("fairness") or {}).get("sensitive") or [])
        if not sensitive:
            raise UserError("which columns define the groups? Name them: --sensitive sex,race")
    try:
        result = audit_run(
            args.run, sensitive, split=args.split, runs_dir=args.runs_dir, postprocess=args.postprocess,
            n_resamples=args.resamples, seed=args.seed,
        )  # fmt: skip
    except NotApplicableError as e:
        raise UserError(str(e)) from None
    if args.out:
        _write(result, Path(args.out))
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
    else:
        print(format_fairness(result))
    return 0


def _write(result: Any, out: Path) -> None:
    from ember.responsible.fairness_plots import group_bars, tradeoff

    out.mkdir(parents=True, exist_ok=True)
    (out / "fairness.json").write_text(json.dumps(result.to_dict(), indent=1))
    for audit in result.audits:
        name = audit.attribute.replace(" & ", "-x-").replace("/", "_")
        (out / f"fairness-{name}.png").write_bytes(group_bars(audit))
    if result.rule is not None:
        points = {"model": (result.worst_gap(), result.accuracy)}
        worst = max(a.gaps["demographic_parity_difference"].value for a in result.audits_after)
        points["per-group thresholds"] = (worst, result.accuracy_after)
        (out / "fairness-tradeoff.png").write_bytes(tradeoff(points))


def format_fairness(result: Any) -> str:
    """Per attribute: a table of groups, then the gaps with their intervals."""
    from ember.cli._format import table

    lines = [
        f"fairness of run {result.run_id} on {result.split} ({result.n} examples), accuracy {result.accuracy:.4f}"
    ]
    for audit in result.audits:
        lines += ["", *_audit_lines(audit, table)]
    if result.rule is not None:
        lines += [
            "",
            f"after per-group thresholds ({result.rule.criterion}, fitted on val): accuracy "
            f"{result.accuracy_after:.4f} ({result.accuracy_after - result.accuracy:+.4f})",
        ]
        for audit in result.audits_after:
            dp, eo = audit.gaps["demographic_parity_difference"], audit.gaps["equalized_odds_difference"]
            lines.append(
                f"  {audit.attribute}: demographic-parity difference {dp}, equalized-odds difference {eo}"
            )
    return "\n".join(lines)


def _audit_lines(audit: Any, table: Any) -> list[str]:
    first = audit.by_group[audit.groups[0]]
    shown = [m for m in ("accuracy", "selection_rate", "tpr", "fpr", "ece") if m in first]
    if not shown or "selection_rate" not in first:  # k classes: the worst class of each rate
        from ember.responsible.fairness_plots import _pick

        shown = [
            m
            for m in ("accuracy", *(_pick(audit, r) for r in ("selection_rate", "tpr", "fpr")), "ece")
            if m and m in first
        ]
    rows = [[g, audit.counts[g], *(str(audit.by_group[g][m]) for m in shown)] for g in audit.groups]
    lines = [f"{audit.attribute}:", table(["group", "n", *shown], rows)]
    for name, ci in audit.gaps.items():
        lines.append(f"  {name:31s} {ci}")
    lines += [f"  note: {n}" for n in audit.notes]
    return lines
