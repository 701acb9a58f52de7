"""Where a fit's fixed set-up goes: the phases of a one-step ``Trainer.fit``, first and later fits.

Each child process imports torch and ember, loads the digits, imports ``torch._dynamo`` (what any
PyTorch loop's first optimizer imports; timed apart), then runs eight one-step fits of the tiny MLP
(64-64-10, AdamW, batch 64, ember's defaults, a run store of its own), timing the phases below by
wrapping the functions ``Trainer.fit`` calls. The *first* fit is what a new process pays; a
*later* fit (median of the other seven) what each further fit pays. Children take turns: for each
source tree given (``--src``; default this checkout) one child with an empty measurement cache
(``ember.train.measured``: the first process on a machine) and one with the cache the previous
child left (every later process), ``--rounds`` times; each cell is the median over rounds. A tree
from before that cache gets one child a round.

Phases are inclusive (a phase's sub-phases, indented, are inside it); "fsync" and "run.json" add
up every ``os.fsync`` and every ``run.json`` write across the fit. A tree that lacks a function
(an older ember) shows 0 for it.

Usage:
    python benchmarks/fit_setup.py
    python benchmarks/fit_setup.py --src /tmp/ember-old/src --src src --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PHASES = [
    ("total", "whole fit (one step)"),
    ("Trainer(...)", "Trainer(...): config, run store opened"),
    ("build_optimizer", "optimizer, with its implementation choice"),
    ("new run", "new run"),
    ("  source_version", "  source version (git, source hash)"),
    ("  environment", "  environment"),
    ("  RunStore.create", "  run folder, SQLite row, run.json"),
    ("record inputs", "data fingerprint, spec.json, data split"),
    ("MFU inputs", "MFU inputs"),
    ("  matmul_peak", "  matmul peak"),
    ("  FLOPs count", "  FLOPs count (meta copy)"),
    ("loop", "the loop: heartbeat start, one step, checkpoint"),
    ("fit end", "fit end: writes drained, weights, final record"),
    ("fsync (all)", "every fsync"),
    ("run.json (all)", "every run.json write"),
]


def child() -> None:
    """One process: the first fit and seven later ones; prints their phase times as JSON."""
    import collections

    import torch

    start = time.perf_counter()
    import torch._dynamo  # what any loop's first optimizer imports

    dynamo = time.perf_counter() - start
    from torch import nn

    import ember
    import ember.track.runs as runs
    import ember.train.trainer as trainer
    from ember.data import load_dataset

    torch.set_num_threads(1)
    spent: dict[str, float] = collections.defaultdict(float)

    def wrap(owner: object, name: str, label: str) -> None:
        function = getattr(owner, name, None)
        if function is None:
            return

        def timed(*args: object, **kwargs: object) -> object:
            begin = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[label] += time.perf_counter() - begin

        setattr(owner, name, timed)

    wrap(trainer.Trainer, "__init__", "Trainer(...)")
    wrap(trainer, "build_optimizer", "build_optimizer")
    wrap(trainer, "new_run", "new run")
    wrap(trainer, "source_version", "  source_version")
    wrap(trainer, "environment", "  environment")
    wrap(runs.RunStore, "create", "  RunStore.create")
    wrap(trainer.Trainer, "_record", "record inputs")
    wrap(trainer.Trainer, "_measure_mfu_inputs", "MFU inputs")
    wrap(trainer, "matmul_peak", "  matmul_peak")
    wrap(trainer, "train_flops_per_sample", "  FLOPs count")
    wrap(trainer, "fit", "loop")
    wrap(trainer.Trainer, "_fit_to_end", "_fit_to_end")
    wrap(os, "fsync", "fsync (all)")
    wrap(runs.Run, "save_record", "run.json (all)")
    data = load_dataset("digits").train
    x, y = data.x.reshape(len(data.x), -1).contiguous(), data.y
    folder = Path(tempfile.mkdtemp())
    fits = []
    for _ in range(8):
        spent.clear()
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        begin = time.perf_counter()
        ember.Trainer(
            model, optimizer="adamw", lr=1e-3, batch_size=64, max_steps=1, runs_dir=folder, progress=False
        ).fit((x, y))
        spent["total"] = time.perf_counter() - begin
        spent["fit end"] = spent["_fit_to_end"] - spent["loop"]
        fits.append(dict(spent))
    later = {k: statistics.median(f.get(k, 0.0) for f in fits[1:]) for k in fits[0]}
    print(json.dumps({"first": fits[0], "later": later, "dynamo": dynamo}))


def run_child(src: Path, cache: Path) -> dict[str, Any]:
    env = os.environ | {"PYTHONPATH": str(src), "EMBER_MEASURE_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    env.pop("EMBER_REMEASURE", None)
    done = subprocess.run(
        [sys.executable, __file__, "--child"], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", action="append", help="a source tree's src folder (repeatable)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child()
        return
    trees = [Path(s).resolve() for s in args.src or [str(ROOT / "src")]]
    columns: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for r in range(args.rounds):
            for i, src in enumerate(trees[r % len(trees) :] + trees[: r % len(trees)]):
                cache = Path(folder) / f"measured-{r}-{i}.json"  # empty for the first child
                kept = (
                    src / "ember" / "train" / "measured.py"
                ).is_file()  # older trees measure every process
                for how in ("cache empty", "cache kept") if kept else ("no cache",):
                    columns.setdefault(f"{src.parent.name}/{src.name}, {how}", []).append(
                        run_child(src, cache)
                    )
    print(f"{_machine()}, {args.rounds} rounds; milliseconds, median over rounds")
    heads = [f"{name}: {which}" for name in columns for which in ("first", "later")]
    print("| phase | " + " | ".join(heads) + " |")
    print("|---" * (len(heads) + 1) + "|")
    for key, label in PHASES:
        cells = [
            f"{statistics.median(c[which].get(key, 0.0) for c in runs) * 1e3:.1f}"
            for runs in columns.values()
            for which in ("first", "later")
        ]
        print(f"| {label} | " + " | ".join(cells) + " |")
    for name, runs in columns.items():
        dynamo = statistics.median(c["dynamo"] for c in runs) * 1e3
        print(f"{name}: import torch._dynamo {dynamo:.0f} ms (before the fits, not in the table)")


def _machine() -> str:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import _common

    return _common.machine()


if __name__ == "__main__":
    main()
