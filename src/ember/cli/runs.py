"""``ember runs``: the run store as a table, one run in full, two runs side by side."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from typing import Any

from ember.cli._format import fmt, table

HELP = """List runs (newest first), show one, or compare two.

examples:
  ember runs                       # id, config, status, data hash, best metric, time
  ember runs --json                # the same for scripts
  ember runs show latest
  ember runs compare RUN_A RUN_B
"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
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
    compare = verbs.add_parser("compare", help="two runs side by side: config differences and metrics")
    compare.add_argument("run_a")
    compare.add_argument("run_b")
    compare.add_argument("--runs-dir", metavar="DIR", default=argparse.SUPPRESS)
    compare.set_defaults(func=run_compare)


def _store(args: argparse.Namespace):  # type: ignore[no-untyped-def]
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


def run_compare(args: argparse.Namespace) -> int:
    from ember.config import diff, load_config
    from ember.recipe import _yaml

    store = _store(args)
    a, b = store.get(args.run_a), store.get(args.run_b)
    changes = diff(load_config(_yaml(a.config)), load_config(_yaml(b.config)))
    print(f"A = {a.id}\nB = {b.id}")
    print("config differences (A -> B):" if changes else "configs are identical")
    for line in changes:
        print(f"  {line}")
    keys = [
        k
        for k in dict.fromkeys([*a.summary, *b.summary])
        if isinstance(a.summary.get(k, b.summary.get(k)), float)
    ]
    rows = [(k, a.summary.get(k), b.summary.get(k), _delta(a.summary.get(k), b.summary.get(k))) for k in keys]
    print(table(["metric", "A", "B", "B - A"], rows))
    return 0


def _delta(x: Any, y: Any) -> Any:
    return y - x if isinstance(x, float) and isinstance(y, float) else None
