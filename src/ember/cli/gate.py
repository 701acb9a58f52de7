"""``ember gate``: check a run against a release policy; exit 1 when a threshold fails."""

from __future__ import annotations

import argparse
import json

HELP = """Check a finished run against a YAML release policy: metric interval lower bounds, margins
over baselines, fairness gaps, calibration (ECE), the privacy budget, p99 latency and the severity of
`ember check` findings. Prints one row per threshold and exits 1 when any fails (0 when all pass),
so CI can run it before `ember registry promote`.

policy keys (all optional): split, min_ci_low {metric: v}, min_baseline_margin {metric: v},
max_fairness_gap {gap: v}, max_ece, max_epsilon, max_p99_latency_ms, latency_batch,
max_finding_severity (info|warning|error), resamples.

examples:
  ember gate latest --policy gate.yaml
  ember gate RUN --policy gate.yaml --plan plan.json --json
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gate", help="check a run against a release policy (exit 1 on failure)", description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("run", help="run id, unique prefix, or 'latest'")
    p.add_argument("--policy", required=True, help="the policy YAML")
    p.add_argument("--plan", metavar="JSON", help="read p99 latency from a serving plan instead of measuring")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.add_argument("--runs-dir", metavar="DIR", help="the run store (default $EMBER_RUNS or ./runs)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ember.cli._format import table
    from ember.responsible.gate import evaluate_gate, load_policy

    rules = evaluate_gate(args.run, load_policy(args.policy), runs_dir=args.runs_dir, plan=args.plan)
    failed = [r for r in rules if not r.passed]
    if args.json:
        print(json.dumps({"passed": not failed, "rules": [r.to_dict() for r in rules]}, indent=1))
    else:
        rows = [[r.name, r.measured, r.limit, "pass" if r.passed else "FAIL", r.note] for r in rules]
        print(table(["rule", "measured", "limit", "result", "note"], rows))
        print(
            f"gate {'passed' if not failed else 'FAILED'}: {len(rules) - len(failed)} of {len(rules)} rules pass"
        )
    return 1 if failed else 0
