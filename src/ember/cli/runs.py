"""``ember runs``: the run store as a table, one run in full, two runs side by side."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ember.cli._format import fmt, table

if TYPE_CHECKING:
    from ember.track import RunStore

HELP = """List runs (newest first), show one, or compare two.

examples:
  ember runs                       # id, config, status, data hash, best metric, time
  ember runs --json                # the same for scripts
  ember runs show latest
  ember runs compare RUN_A RUN_B
  ember runs rebuild               # rebuild the index (ember.db) from the run folders
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "runs",
        help="list, show and compare runs",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--runs-dir", metavar="DIR", help="the run store (default $EMBER_RUNS or ./runs)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.add_argument("--limit", type=int, default=50, help="at most this many runs (default 50)")
    p.set_defaults(func=run_list)
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    show = verbs.add_parser("show", help="one run in full: config, metrics, environment, files")
    show.add_argument("run", help="run id, unique prefix, or 'latest'")
    show.add_argument("--runs-dir", metavar="DIR", default=argparse.SUPPRESS)
    show.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    show.set_defaults(func=run_show)
    compare = verbs.add_parser(
        "compare",
        help="two runs side by side: config differences, metrics, and a paired test of B against A",
        description="Config differences and logged metrics of two runs, then a paired test on one split: both "
        "final models predict the same examples; a paired bootstrap gives B - A with its interval and p-value for "
        "every metric, McNemar's test compares their right/wrong answers (classification), and a verdict says "
        "whether B is significantly better.\n\nexamples:\n  ember runs compare RUN_A RUN_B\n"
        "  ember runs compare RUN_A RUN_B --split val --resamples 5000",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compare.add_argument("run_a")
    compare.add_argument("run_b")
    compare.add_argument("--runs-dir", metavar="DIR", default=argparse.SUPPRESS)
    compare.add_argument("--split", default="test", choices=["train", "val", "test"], help="default test")
    compare.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    compare.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    compare.add_argument("--no-test", action="store_true", help="configs and logged metrics only")
    compare.set_defaults(func=run_compare)
    rebuild = verbs.add_parser(
        "rebuild",
        help="rebuild the run store's index (ember.db) from the run folders, after it was lost or damaged",
    )
    rebuild.add_argument("--runs-dir", metavar="DIR", default=argparse.SUPPRESS)
    rebuild.set_defaults(func=run_rebuild)


def _store(args: argparse.Namespace) -> RunStore:
    from ember.track import RunStore

    return RunStore(args.runs_dir)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


def run_list(args: argparse.Namespace) -> int:
    records = _store(args).list(limit=args.limit)
    if args.json:
        out = []
        for r in records:
            d = dataclasses.asdict(r)
            d["folder"] = str(r.folder)
            d.pop("config")
            out.append(d)
        print(json.dumps(out, indent=2))
        return 0
    if not records:
        print(
            f"no runs yet in {args.runs_dir or 'runs'}; start one with `ember train configs/digits-cnn.yaml`"
        )
        return 0
    rows = [
        (
            r.id,
            r.name,
            r.status,
            (r.data_sha256 or "-")[:12],
            f"{r.headline}={fmt(r.best)}" if r.headline else "-",
            _duration(r.duration_s),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created)),
        )
        for r in records
    ]
    print(table(["id", "config", "status", "data", "best", "time", "created"], rows))
    return 0


def run_show(args: argparse.Namespace) -> int:
    store = _store(args)
    r = store.get(args.run)
    if getattr(args, "json", False):
        d: dict[str, Any] = dataclasses.asdict(r)
        d["folder"] = str(r.folder)
        d["artifacts"] = store.artifacts(r.id)
        print(json.dumps(d, indent=2))
        return 0
    print(f"run      {r.id}\nstatus   {r.status}" + (f"  ({r.error})" if r.error else ""))
    print(f"folder   {r.folder}\ncreated  {time.ctime(r.created)}   duration {_duration(r.duration_s)}")
    print(f"data     {r.data_sha256}\nconfig   {r.config_sha256}")
    print(
        f"source   git {r.source.get('git')} dirty={r.source.get('dirty')}  src {str(r.source.get('source_sha256'))[:12]}"
    )
    env = r.environment
    print(
        f"env      python {env.get('python')}  torch {env.get('packages', {}).get('torch')}  {env.get('platform')}"
        + (f"  precision {env['precision']}" if env.get("precision") else "")
    )
    if r.headline:
        print(f"best     {r.headline} = {fmt(r.best)}")
    if r.summary:
        print("summary:")
        for k, v in r.summary.items():
            print(f"  {k:28s} {fmt(v)}")
    evals = {name: value for _, _, name, value in store.metrics(r.id) if name.startswith(("eval/", "test/"))}
    if evals:
        print("evaluations:")
        for k, v in evals.items():
            if "/class_" not in k:
                print(f"  {k:28s} {fmt(v)}")
    print("files:")
    for path, kind, digest, size in store.artifacts(r.id):
        print(f"  {path:24s} {kind:8s} {size:>10d} B  sha256 {digest[:16]}")
    print("config:\n" + "\n".join("  " + line for line in r.config.splitlines()))
    return 0


def run_rebuild(args: argparse.Namespace) -> int:
    from ember.track import default_root
    from ember.track.rebuild import rebuild

    root = Path(args.runs_dir) if args.runs_dir else default_root()
    if not root.is_dir():
        raise FileNotFoundError(f"no run store at {root}; give --runs-dir DIR")
    report = rebuild(root)
    print(f"rebuilt {root / 'ember.db'}: {report.runs} runs, {report.metrics} metric values")
    if report.kept_damaged is not None:
        print(f"the previous index is kept as {report.kept_damaged}")
    for note in report.notes:
        print(f"  {note}")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from ember.config import diff, load_config, parse_yaml

    store = _store(args)
    a, b = store.get(args.run_a), store.get(args.run_b)
    changes = diff(load_config(parse_yaml(a.config)), load_config(parse_yaml(b.config)))
    print(f"A = {a.id}\nB = {b.id}")
    print("config differences (A -> B):" if changes else "configs are identical")
    for line in changes:
        print(f"  {line}")
    keys = [
        k
        for k in dict.fromkeys([*a.summary, *b.summary])
        if isinstance(a.summary.get(k, b.summary.get(k)), float) and "/class_" not in k
    ]
    rows = [(k, a.summary.get(k), b.summary.get(k), _delta(a.summary.get(k), b.summary.get(k))) for k in keys]
    print(table(["metric", "A", "B", "B - A"], rows))
    if not args.no_test:
        print()
        print(_paired_test(args, a.id, b.id))
    return 0


def _paired_test(args: argparse.Namespace, a_id: str, b_id: str) -> str:
    """The paired bootstrap and McNemar section of ``ember runs compare``, or why there is none."""
    from ember.evaluate import comparable, compare, run_predictions
    from ember.evaluate.scorecard import fmt_p
    from ember.tasks.spec import NotApplicable

    try:
        pa = run_predictions(a_id, args.split, runs_dir=args.runs_dir)
        pb = run_predictions(b_id, args.split, runs_dir=args.runs_dir)
    except (FileNotFoundError, ValueError, NotApplicable) as e:
        return f"paired test skipped: {e}"
    reason = comparable(pa, pb)
    if reason is not None:
        return f"paired test skipped: {reason}"
    try:
        result = compare(pa, pb, n_resamples=args.resamples, seed=args.seed)
    except (ValueError, NotApplicable) as e:
        return f"paired test skipped: {e}"
    lines = [
        f"paired test on the {result.split} split ({result.n} {result.unit}, the same for both runs; "
        f"{args.resamples} bootstrap resamples):"
    ]
    rows = [
        (name, str(t.a), str(t.b), f"{t.difference.value:+.4f} [{t.difference.low:+.4f}, {t.difference.high:+.4f}]",
         fmt_p(t.p_value).removeprefix("p=").removeprefix("p"))
        for name, t in result.tests.items()
    ]  # fmt: skip
    lines.append(table(["metric", "A", "B", "B - A", "p (bootstrap)"], rows))
    if result.mcnemar is not None:
        m = result.mcnemar
        kind = "exact binomial" if m.exact else "chi-square, continuity-corrected"
        lines.append(
            f"McNemar ({kind}): A right & B wrong {m.b}, A wrong & B right {m.c}, {fmt_p(m.p_value)} "
            f"(p-value {m.p_value:.4g})"
        )
    head = result.tests.get(result.headline)
    if head is not None:
        floor = 1 / (args.resamples + 1)
        note = (
            f" (the floor of {args.resamples} resamples; raise --resamples to resolve it)"
            if head.p_value <= floor * 1.0001
            else ""
        )
        lines.append(f"paired bootstrap p-value on {result.headline}: {head.p_value:.4g}{note}")
    lines.append(f"verdict: {result.verdict}")
    return "\n".join(lines)


def _delta(x: Any, y: Any) -> Any:
    return y - x if isinstance(x, float) and isinstance(y, float) else None
