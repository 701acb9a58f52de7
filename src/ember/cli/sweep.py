"""``ember sweep``: a hyperparameter search on Optuna; every trial a normal run in the store."""

from __future__ import annotations

import argparse

HELP = """Search hyperparameters of a recipe with Optuna (TPE sampler, median pruner). Each trial is an
ordinary run (`ember runs` lists it as <config>-<study>-tN); the study lives in an RDB storage, SQLite
beside the run store by default, so several --workers (processes) share it, and a PostgreSQL or MySQL
URL (--storage) lets workers on several machines join the same study. Running the same command again
continues the study up to --trials.

--param KEY=KIND:VALUES, one per key:
  log:LOW,HIGH      a float on a log scale      optim.lr=log:1e-4,1e-1
  float:LOW,HIGH    a float                     optim.weight_decay=float:0,0.1
  int:LOW,HIGH      an integer                  model.width=int:16,64
  choice:A,B,...    one of the values           optim.name=choice:adam,sgd

examples:
  ember sweep configs/digits-cnn.yaml --param optim.lr=log:1e-4,1e-1 --trials 20 --workers 2
  ember sweep configs/digits-cnn.yaml trainer.epochs=5 --param optim.lr=log:1e-4,1e-1 \\
      --param model.width=int:8,32 --study width-lr --storage postgresql://user@host/optuna
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="search hyperparameters with Optuna; each trial a run in the store",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="a YAML recipe (configs/...)")
    p.add_argument("overrides", nargs="*", help="fixed dotted overrides for every trial")
    p.add_argument("--param", action="append", default=[], metavar="KEY=KIND:VALUES", help="a searched key")
    p.add_argument("--trials", type=int, default=20, help="trials in the study in all (default 20)")
    p.add_argument("--workers", type=int, default=1, help="worker processes sharing the study (default 1)")
    p.add_argument("--study", default="", help="the study's name (default: the config's name)")
    p.add_argument("--storage", default="", help="Optuna RDB URL (default sqlite:///<runs-dir>/sweeps.db)")
    p.add_argument("--no-prune", action="store_true", help="run every trial to the end")
    p.add_argument("--seed", type=int, default=0, help="the sampler's seed (default 0)")
    p.add_argument("--runs-dir", metavar="DIR", help="the run store (default $EMBER_RUNS or ./runs)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ember.cli._format import table
    from ember.recipe.sweep import sweep

    if args.trials < 1 or args.workers < 1:
        raise ValueError(f"--trials and --workers must be >= 1; got {args.trials} and {args.workers}")
    result = sweep(
        args.config, args.param, overrides=args.overrides, trials=args.trials, workers=args.workers,
        study=args.study, storage=args.storage, runs_dir=args.runs_dir, seed=args.seed, prune=not args.no_prune,
    )  # fmt: skip
    rows = [
        [t["number"], t["state"], "" if t["value"] is None else f"{t['value']:.4f}",
         ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["params"].items()),
         t["run_id"] or ""]
        for t in result.trials
    ]  # fmt: skip
    print(f"study {result.study} ({result.direction} {result.metric}) in {result.storage}")
    print(table(["trial", "state", result.metric, "params", "run"], rows))
    if result.best is not None:
        print(
            f"best: trial {result.best['number']}, {result.metric} {result.best['value']:.4f}, run {result.best['run_id']}"
        )
    return 0
