"""``ember registry``: push bundles as numbered versions, alias them, pull and delete them."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from typing import TYPE_CHECKING, Any

from ember.cli._format import fmt, table

if TYPE_CHECKING:
    from ember.track.registry import ModelRegistry

HELP = """The model registry: trained models as versions (v1, v2, ...) with aliases (production,
staging), stored by content (SQLite + sha256-named blobs) in $EMBER_REGISTRY or ~/.ember/registry.

A reference is NAME (the latest version), NAME@3, NAME@latest or NAME@ALIAS.

examples:
  ember registry push digits.ember --name digits-cnn        # -> digits-cnn@1, then @2 ...
  ember registry list
  ember registry show digits-cnn                             # every version, aliases, lineage
  ember registry promote digits-cnn@3 production
  ember registry pull digits-cnn@production -o serving.ember
  ember registry delete digits-cnn@1
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "registry",
        help="versions and aliases of trained models: push, list, show, promote, pull, delete",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=lambda args: _help(p))
    verbs = p.add_subparsers(dest="verb", metavar="VERB")

    def verb(name: str, help: str, func: Any) -> argparse.ArgumentParser:
        v = verbs.add_parser(name, help=help, description=help)
        v.add_argument("--registry", metavar="DIR", help="the registry (default $EMBER_REGISTRY)")
        v.set_defaults(func=func)
        return v

    push = verb("push", "store a bundle as the next version of NAME", run_push)
    push.add_argument("bundle", help="an .ember file from `ember package`")
    push.add_argument("--name", required=True, help="the model's name, e.g. digits-cnn")
    listing = verb("list", "every model: versions, latest, aliases", run_list)
    listing.add_argument("--json", action="store_true", help="every version as JSON")
    show = verb("show", "a model's versions (NAME) or one version (NAME@3) with its lineage", run_show)
    show.add_argument("ref", help="NAME, NAME@VERSION or NAME@ALIAS")
    show.add_argument("--json", action="store_true", help="print JSON")
    promote = verb("promote", "point an alias (production, staging ...) at a version", run_promote)
    promote.add_argument("ref", help="NAME@VERSION (or any reference)")
    promote.add_argument("alias", help="e.g. production")
    pull = verb("pull", "copy a stored bundle out (verified)", run_pull)
    pull.add_argument("ref", help="NAME, NAME@VERSION or NAME@ALIAS")
    pull.add_argument("-o", "--out", required=True, metavar="PATH", help="a file, or a folder")
    delete = verb("delete", "delete a version (or, with --force and a bare NAME, all)", run_delete)
    delete.add_argument("ref", help="NAME@VERSION or NAME@ALIAS")
    delete.add_argument("--force", action="store_true", help="also delete aliased versions / every version")


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 0


def _registry(args: argparse.Namespace) -> ModelRegistry:
    from ember.track.registry import ModelRegistry

    return ModelRegistry(args.registry)


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def _json(version: Any) -> dict[str, Any]:
    d = dataclasses.asdict(version)
    d["aliases"] = list(version.aliases)
    d["ref"] = version.ref
    return d


def run_push(args: argparse.Namespace) -> int:
    from ember.deploy.bundle import open_bundle

    open_bundle(args.bundle)  # the registry checks hashes; this also rebuilds the model from them
    v = _registry(args).push(args.bundle, args.name)
    print(f"pushed {v.ref}  sha256 {v.sha256}  run {v.run_id or '-'}  data {(v.data_sha256 or '-')[:12]}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    reg = _registry(args)
    versions = reg.list()
    if args.json:
        print(json.dumps([_json(v) for v in versions], indent=2))
        return 0
    if not versions:
        print(f"no models in {reg.root}; add one with `ember registry push FILE --name NAME`")
        return 0
    models: dict[str, list[Any]] = {}
    for v in versions:
        models.setdefault(v.name, []).append(v)
    rows = []
    for name, vs in models.items():
        latest = vs[-1]
        aliases = ", ".join(f"{a}=v{v.version}" for v in vs for a in v.aliases) or "-"
        rows.append(
            (name, len(vs), f"v{latest.version}", aliases, latest.run_id or "-", _when(latest.created))
        )
    print(table(["name", "versions", "latest", "aliases", "latest run", "pushed"], rows))
    return 0


def run_show(args: argparse.Namespace) -> int:
    from ember.track.registry import parse_ref

    reg = _registry(args)
    name, selector = parse_ref(args.ref)
    chosen = [reg.show(args.ref)] if selector else reg.versions(name)
    if args.json:
        print(json.dumps([_json(v) for v in chosen] if not selector else _json(chosen[0]), indent=2))
        return 0
    rows = [
        (
            f"v{v.version}",
            ", ".join(v.aliases) or "-",
            v.sha256[:12],
            v.run_id or "-",
            (v.data_sha256 or "-")[:12],
            _headline(v.lineage),
            _when(v.created),
        )
        for v in chosen
    ]
    print(table(["version", "aliases", "sha256", "run", "data", "metric", "pushed"], rows))
    v = chosen[-1]
    lineage = v.lineage
    print(f"\nlineage of {v.ref}:")
    print(
        f"  run     {lineage['run'].get('id')}  (config sha256 {str(lineage['run'].get('config_sha256'))[:12]})"
    )
    data = lineage["data"]
    splits = ", ".join(f"{k} {str(h)[:12]}" for k, h in (data.get("splits") or {}).items())
    print(f"  data    {data.get('dataset')}  sha256 {data.get('sha256')}  splits: {splits or '-'}")
    code = lineage.get("code") or {}
    print(f"  code    git {code.get('git')} dirty={code.get('dirty')}  ember {code.get('ember_version')}")
    print(f"  bundle  sha256 {v.sha256}  {v.size} B  model {lineage['bundle'].get('model')}")
    return 0


def _headline(lineage: dict[str, Any]) -> str:
    metrics = lineage.get("metrics") or {}
    for key in ("test/accuracy", "val/accuracy", "test/loss", "val/loss"):
        if key in metrics:
            return f"{key}={fmt(metrics[key])}"
    return "-"


def run_promote(args: argparse.Namespace) -> int:
    v = _registry(args).promote(args.ref, args.alias)
    print(f"{args.alias} -> {v.ref}  (aliases of v{v.version}: {', '.join(v.aliases)})")
    return 0


def run_pull(args: argparse.Namespace) -> int:
    reg = _registry(args)
    v = reg.show(args.ref)
    path = reg.pull(v.ref, args.out)
    print(f"pulled {v.ref} -> {path}  sha256 {v.sha256}")
    return 0


def run_delete(args: argparse.Namespace) -> int:
    for v in _registry(args).delete(args.ref, force=args.force):
        print(f"deleted {v.ref}  sha256 {v.sha256[:12]}")
    return 0
