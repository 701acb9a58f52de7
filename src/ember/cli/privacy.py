"""``ember audit privacy``: ε spent and membership-inference attacks on a finished run."""

from __future__ import annotations

import argparse
import json
import math

from ember.cli._format import fmt, table

HELP = """Audit what a finished classification run leaks about its training examples.

Scores n training examples (members) and n held-out ones (non-members) with:
  loss   the loss-threshold attack (Yeom et al. 2018): members have lower loss
  lira   the likelihood-ratio attack (Carlini et al. 2022) with --shadows shadow models, each
         trained with the run's own config (one full training run each)
and reports ROC AUC and the true-positive rate at 0.1% and 1% false positives, beside the run's ε
(a DP run's attacks are bounded: TPR <= e^ε FPR + δ). The result is stored in the run
(audit_privacy.json and audit/privacy/* metrics).

examples:
  ember audit privacy latest --shadows 0          # loss attack only: seconds
  ember audit privacy fashion-dp-2026 --n 2000 --shadows 4
"""


def audit_verbs(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The subcommands of ``ember audit``, created by whichever audit family registers first."""
    parser = sub.choices.get("audit")
    if parser is None:
        parser = sub.add_parser("audit", help="audit a finished run (privacy: membership inference)")
        verbs = parser.add_subparsers(dest="audit", metavar="AUDIT")
        parser.set_defaults(func=lambda args: parser.print_help() or 2)
        return verbs
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def register(sub: argparse._SubParsersAction) -> None:
    p = audit_verbs(sub).add_parser(
        "privacy",
        help="ε spent and membership-inference attacks (loss threshold, LiRA)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", help="run id, unique prefix, or 'latest'")
    p.add_argument("--n", type=int, default=1000, help="members and non-members scored, each (default 1000)")
    p.add_argument(
        "--shadows", type=int, default=4, help="LiRA shadow models, 0 for the loss attack only (default 4)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="which examples are audited and shadows' halves (default 0)"
    )
    p.add_argument("--runs-dir", metavar="DIR", help="the run store (default $EMBER_RUNS or ./runs)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ember.responsible.privacy.membership import audit_run

    if args.n < 10 or args.shadows < 0:
        raise ValueError(
            f"--n must be at least 10 and --shadows at least 0; got --n {args.n} --shadows {args.shadows}"
        )
    log = None if args.json else (lambda line: print(f"  {line}", flush=True))
    audit = audit_run(
        args.run, runs_dir=args.runs_dir, n=args.n, shadows=args.shadows, seed=args.seed, log=log
    )
    if args.json:
        print(json.dumps(audit.to_dict(), indent=1))
        return 0
    eps = audit.privacy.get("epsilon")
    if eps is None:
        print(f"run {audit.run_id}: not trained with differential privacy (ε = ∞)")
    else:
        print(
            f"run {audit.run_id}: ε = {eps:.3f} at δ = {audit.privacy.get('delta', math.nan):g} "
            f"(σ = {audit.privacy.get('noise_multiplier', math.nan):.3f}, {int(audit.privacy.get('steps', 0))} steps)"
        )
    print(
        f"{audit.members} members, {audit.nonmembers} non-members; accuracy {fmt(audit.train_accuracy)} on members, "
        f"{fmt(audit.heldout_accuracy)} on non-members"
    )
    rows = [[name, m["auc"], m["tpr@0.001"], m["tpr@0.01"]] for name, m in audit.attacks.items()]
    print(table(["attack", "AUC", "TPR@0.1%FPR", "TPR@1%FPR"], rows))
    print(f"({audit.seconds:.0f}s; stored in the run as audit_privacy.json)")
    return 0
