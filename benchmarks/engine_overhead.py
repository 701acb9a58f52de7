"""What the training engine costs per step: ember's Trainer and Lightning against a hand-written loop.

The same model, data, optimizer (AdamW, lr 1e-3, weight decay 0, PyTorch's default implementation)
and step count run through four variants:

- ``plain``: the loop a PyTorch user writes (shuffle, index, forward, loss, zero_grad, backward, step);
- ``ember``: ``ember.Trainer`` with its defaults: run store (SQLite + run folder), metric logging every
  ``log_every`` steps, a finite-loss check, a checkpoint (weights, optimizer, RNG, position; atomic,
  fsynced) at every epoch end. Only the progress bar is off, as it is anyway without a terminal;
- ``lightning``: Lightning's ``Trainer`` with its defaults (logger, checkpoint every epoch, progress
  bar, model summary; the loss logged with ``self.log`` as ember logs it), its terminal output discarded;
- ``lightning-stripped``: Lightning with logger, checkpointing, progress bar and model summary off;
- ``ember-loop`` (a diagnostic, not a configuration anyone runs): ember's ``fit`` loop, loader, task
  and optimizer builder alone, without the run store, logging callbacks and checkpoints, so the
  ``ember`` row splits into per-step loop overhead and per-epoch bookkeeping.

``plain`` and both Lightning variants draw batches from the same in-memory iterable (a ``randperm``
per epoch, then tensor indexing); ember gets the ``(X, y)`` tensors and uses its own in-memory
loader. So no variant pays for a ``DataLoader``'s per-item collation and the figure is the engine's.

Each variant trains ``N1`` and ``N2`` steps from a fresh model; the marginal time per step is
``(t(N2) - t(N1)) / (N2 - N1)`` (the per-epoch work inside it, amortized) and the fixed cost is
``t(N1) - N1 * marginal`` (building the trainer, run store, first-step warm-up...). Variants take
turns, the order rotated each round; the ratio to ``plain`` is the median over rounds of that
round's ratio. Beside it, the best-of-rounds ratio takes each variant's fastest ``t(N1)`` and
``t(N2)``: on a shared machine interference only ever adds time, so the minimum is the steadiest
estimate of what the code itself costs (the reasoning of ``timeit``).

That fixed cost is a *later* fit's: each variant ran untimed once first, in the same process. A
user's first fit in a new process also pays what a process does once (torch's lazy imports,
ember's hardware measurements), so it is measured apart, each round, in a fresh child process per
variant that imports everything, loads the data, then times one run of ``N1`` steps; its set-up is
that time less ``N1`` times the variant's marginal step. Any PyTorch loop's first optimizer imports
``torch._dynamo`` (0.6–1.5 s here, varying with the load more than all else together), so the
child imports it first and times that apart: the table shows it on its own row, and the set-up
figures exclude it (a user's first fit pays both). ``ember`` runs there twice: with an empty
measurement cache (``ember.train.measured``: the first process on a machine, or after
``EMBER_REMEASURE=1``) and with the cache its earlier run left (every later process).

Digits has 1,797 examples: an epoch is only 29 steps, so per-epoch work (ember's checkpoint and run
store flush, Lightning's checkpoint) weighs a lot; ``--epoch-scale K`` repeats the examples K times
to show the same engines with K times longer epochs.

Usage:
    python benchmarks/engine_overhead.py                        # both models, 1 and 2 threads
    python benchmarks/engine_overhead.py --models mlp --threads 1 --rounds 7
    python benchmarks/engine_overhead.py --models mlp --epoch-scale 20 --steps-mlp 580,5800
    python benchmarks/engine_overhead.py --models mlp --threads 1 --variants plain,ember --no-first-fit
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common
import torch
import torch.nn.functional as F
from torch import nn

import ember
from ember.config import OptimConfig, TrainerConfig
from ember.data import ArrayData, load_dataset, make_loader
from ember.tasks.classification import Classification
from ember.train.callbacks import CallbackList
from ember.train.loop import fit
from ember.train.optim import build_optimizer
from ember.train.precision import resolve_precision
from ember.train.state import TrainState

LR = 1e-3
BATCH = 64
VARIANTS = ("plain", "ember", "lightning", "lightning-stripped", "ember-loop")


@dataclass(frozen=True)
class Workload:
    name: str
    build: Callable[[], nn.Module]
    x: torch.Tensor
    y: torch.Tensor
    steps: tuple[int, int]


def workloads(steps_mlp: tuple[int, int], steps_cnn: tuple[int, int], scale: int = 1) -> dict[str, Workload]:
    """The tiny MLP (64-64-10 on flattened 8x8 digits) and ember's ``cnn`` on the 8x8 digit images."""
    data = load_dataset("digits").train  # 1,797 examples: 28 batches of 64 and one of 5 per epoch
    x, y = data.x.repeat(scale, 1, 1, 1), data.y.repeat(scale)

    def mlp() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

    def cnn() -> nn.Module:
        torch.manual_seed(0)
        return ember.models.create("cnn", in_channels=1, num_classes=10, image_size=8)

    return {
        "mlp": Workload("tiny MLP 64-64-10", mlp, x.reshape(len(x), -1).contiguous(), y, steps_mlp),
        "cnn": Workload("ember cnn (32-64-128) on 8x8", cnn, x, y, steps_cnn),
    }


def adamw(model: nn.Module) -> torch.optim.Optimizer:
    # ember's adamw with its defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0
    return torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)


class Batches:
    """Shuffled in-memory batches: what a hand-written loop does, as an iterable Lightning accepts."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> None:
        self.x, self.y, self.batch_size = x, y, batch_size
        self.generator = torch.Generator().manual_seed(0)

    def __len__(self) -> int:
        return -(-len(self.y) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.y), generator=self.generator)
        for start in range(0, len(self.y), self.batch_size):
            index = order[start : start + self.batch_size]
            yield self.x.index_select(0, index), self.y.index_select(0, index)  # faster than x[index]


# --------------------------------------------------------------------------- the four variants


def run_plain(work: Workload, steps: int, tmp: Path) -> None:
    model = work.build()
    optimizer = adamw(model)
    model.train()
    batches = Batches(work.x, work.y, BATCH)
    step = 0
    while step < steps:
        for x, y in batches:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step == steps:
                break


def run_ember(work: Workload, steps: int, tmp: Path) -> None:
    trainer = ember.Trainer(
        work.build(),
        optimizer="adamw",
        lr=LR,
        batch_size=BATCH,
        epochs=1_000_000,
        max_steps=steps,
        runs_dir=tmp / "runs",
        progress=False,
    )
    trainer.fit((work.x, work.y))


def run_ember_loop(work: Workload, steps: int, tmp: Path) -> None:
    model = work.build()
    optimizer = build_optimizer(model, OptimConfig(name="adamw", lr=LR))
    loader = make_loader(ArrayData(work.x, work.y), batch_size=BATCH, shuffle=True)
    cpu = torch.device("cpu")
    state = TrainState(
        model=model,
        optimizer=optimizer,
        precision=resolve_precision("fp32", cpu),
        device=cpu,
        epochs=1_000_000,
        total_steps=steps,
        steps_per_epoch=len(loader),
    )
    fit(state, loader, Classification(), CallbackList([]), cfg=TrainerConfig(max_steps=steps))


def _lightning_module(model: nn.Module, log_loss: bool) -> object:
    import lightning as L

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = F.cross_entropy(self.model(x), y)
            if log_loss:
                self.log("train_loss", loss)
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return adamw(self)

    return Module()


def _run_lightning(work: Workload, steps: int, tmp: Path, *, stripped: bool) -> None:
    import lightning as L

    options: dict[str, Any] = (
        {
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
        }
        if stripped
        else {}
    )
    module = _lightning_module(work.build(), log_loss=not stripped)
    sink = io.StringIO()
    with contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):
        trainer = L.Trainer(
            max_steps=steps,
            max_epochs=-1,
            accelerator="cpu",
            devices=1,
            default_root_dir=tmp / "lightning",
            **options,
        )
        trainer.fit(module, train_dataloaders=Batches(work.x, work.y, BATCH))  # type: ignore[arg-type]


RUNNERS: dict[str, Callable[[Workload, int, Path], None]] = {
    "plain": run_plain,
    "ember": run_ember,
    "lightning": lambda w, n, t: _run_lightning(w, n, t, stripped=False),
    "lightning-stripped": lambda w, n, t: _run_lightning(w, n, t, stripped=True),
    "ember-loop": run_ember_loop,
}


# --clock cpu: time.process_time (all threads' CPU time, blind to waiting for a core)
CLOCK = time.perf_counter


def timed(variant: str, work: Workload, steps: int, tmp: Path) -> float:
    gc.collect()
    start = CLOCK()
    RUNNERS[variant](work, steps, tmp)
    return CLOCK() - start


# --------------------------------------------------------------------------- measuring


@dataclass
class Measured:
    marginal: list[float]  # seconds per step, one per round
    fixed: list[float]  # seconds, one per round
    short: list[float]  # t(N1), one per round
    long: list[float]  # t(N2), one per round
    first: dict[str, list[float]] = field(default_factory=dict)  # how -> t(N1) of a fresh process's first run

    def best_marginal(self, n1: int, n2: int) -> float:
        """From the fastest t(N1) and t(N2) over the rounds: interference only ever adds time."""
        return (min(self.long) - min(self.short)) / (n2 - n1)


FIRST_FIT = {"plain": ["plain"], "ember": ["ember, cache empty", "ember, cache kept"]}
"""The variants timed in fresh processes, and how (ember: with and without its measurement cache)."""
DYNAMO = "import torch._dynamo (any loop's first optimizer; not in the rows above)"


def first_fit(
    variant: str, model: str, threads: int, steps: int, cache: Path, args: argparse.Namespace
) -> tuple[float, float]:
    """Seconds of ``import torch._dynamo``, then of the first run of ``variant`` for ``steps`` steps, in a
    fresh process (the other imports and the data loading untimed)."""
    command = [
        sys.executable,
        __file__,
        "--first-fit-child",
        f"{variant},{model},{threads},{steps}",
        f"--epoch-scale={args.epoch_scale}",
        f"--clock={args.clock}",
    ]
    env = os.environ | {"EMBER_MEASURE_CACHE": str(cache), "OMP_NUM_THREADS": str(threads)}
    env.pop("EMBER_REMEASURE", None)
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    dynamo, run = done.stdout.strip().splitlines()[-1].split()
    return float(dynamo), float(run)


def measure(
    work: Workload, variants: list[str], rounds: int, tmp: Path, child: tuple[str, int, argparse.Namespace]
) -> dict[str, Measured]:
    n1, n2 = work.steps
    for variant in variants:  # one untimed warm-up each: imports, lazy initialization, page cache
        timed(variant, work, min(n1, 30), tmp)
    out = {v: Measured([], [], [], []) for v in variants}
    model, threads, args = child
    for r in range(rounds):
        for variant in _common.rotate(variants, r):
            t1 = timed(variant, work, n1, tmp)
            t2 = timed(variant, work, n2, tmp)
            marginal = (t2 - t1) / (n2 - n1)
            out[variant].marginal.append(marginal)
            out[variant].fixed.append(t1 - n1 * marginal)
            out[variant].short.append(t1)
            out[variant].long.append(t2)
        if args.first_fit:
            cache = tmp / f"measured-{model}-{threads}-{r}.json"  # empty for the first ember child
            for variant in _common.rotate([v for v in variants if v in FIRST_FIT], r):
                for how in FIRST_FIT[variant]:
                    dynamo, seconds = first_fit(variant, model, threads, n1, cache, args)
                    out[variant].first.setdefault(how, []).append(seconds)
                    out["plain"].first.setdefault(DYNAMO, []).append(dynamo)
    return out


def report(work: Workload, threads: int, results: dict[str, Measured]) -> str:
    base = results["plain"].marginal
    n1, n2 = work.steps
    best_base = results["plain"].best_marginal(n1, n2)
    rows = []
    for variant, m in results.items():
        ratios = [v / b for v, b in zip(m.marginal, base)]
        per_step = _common.median(m.marginal)
        rows.append(
            [
                variant,
                f"{1 / per_step:,.0f}",
                f"{per_step * 1e3:.3f}",
                f"{_common.median(ratios):.3f}x",
                _common.spread(ratios),
                f"{m.best_marginal(n1, n2) / best_base:.3f}x",
                f"{_common.median(m.fixed) * 1e3:.0f} ({_ms_range([f * 1e3 for f in m.fixed])})",
            ]
        )
    first = []
    plain_setup: list[float] = []
    for m in results.values():
        for how, times in m.first.items():
            if how == DYNAMO:
                continue
            # the set-up: the first run less its steps at the pace this variant kept in that round
            setup = [(t - n1 * per_step) * 1e3 for t, per_step in zip(times, m.marginal)]
            plain_setup = plain_setup or setup  # plain comes first
            extra = [a - b for a, b in zip(setup, plain_setup)]
            first.append(
                [how, f"{_common.median(setup):.0f}", _ms_range(setup), f"{_common.median(extra):+.0f}"]
            )
    if DYNAMO in results["plain"].first:
        dynamo = [t * 1e3 for t in results["plain"].first[DYNAMO]]
        first.append([DYNAMO, f"{_common.median(dynamo):.0f}", _ms_range(dynamo), ""])
    per_epoch = -(-len(work.y) // BATCH)
    head = (
        f"{work.name}, batch {BATCH}, {per_epoch} steps per epoch, {threads} thread(s), "
        f"steps {n1} and {n2}, {len(base)} rounds"
    )
    header = [
        "variant",
        "steps/s",
        "ms/step",
        "ratio to plain (median)",
        "ratio range",
        "best-of-rounds ratio",
        "later-fit set-up ms (range)",
    ]
    text = head + "\n" + _common.table(header, rows)
    if first:
        header = [
            "first run in a fresh process",
            "set-up ms (median)",
            "range",
            "vs plain (median of rounds)",
        ]
        text += "\n\n" + _common.table(header, first)
    return text


def _ms_range(values: list[float]) -> str:
    return f"{min(values):.0f} to {max(values):.0f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mlp,cnn", help="comma list of: mlp, cnn")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma list; plain is always included")
    parser.add_argument("--threads", default="1,2", help="comma list of torch thread counts")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps-mlp", default="580,2900", help="N1,N2 for the MLP (29 steps per epoch)")
    parser.add_argument("--steps-cnn", default="58,290", help="N1,N2 for the CNN (29 steps per epoch)")
    parser.add_argument("--epoch-scale", type=int, default=1, help="repeat the 1,797 digits this many times")
    parser.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "cpu"],
        help="cpu: process CPU time of all threads (a cross-check on a machine shared with other work)",
    )
    parser.add_argument(
        "--no-first-fit",
        dest="first_fit",
        action="store_false",
        help="skip the first runs in fresh processes (plain, ember with and without its cache)",
    )
    parser.add_argument(
        "--first-fit-child", default="", help=argparse.SUPPRESS
    )  # variant,model,threads,steps
    args = parser.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter

    def pair(text: str) -> tuple[int, int]:
        a, b = (int(v) for v in text.split(","))
        return a, b

    warnings.filterwarnings("ignore")
    if args.first_fit_child:  # a fresh process: time the first run, print its seconds
        variant, name, threads, steps = args.first_fit_child.split(",")
        _common.set_threads(int(threads))
        work = workloads(pair(args.steps_mlp), pair(args.steps_cnn), args.epoch_scale)[name]
        start = CLOCK()
        import torch._dynamo  # noqa: F401  (what any loop's first optimizer imports)

        dynamo = CLOCK() - start
        with tempfile.TemporaryDirectory() as folder:
            print(dynamo, timed(variant, work, int(steps), Path(folder)))
        return
    variants = ["plain"] + [v for v in args.variants.split(",") if v and v != "plain"]
    if any(v.startswith("lightning") for v in variants):
        import lightning  # noqa: F401  (its import sets its loggers to INFO; quiet them afterwards)

        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.ERROR)
    works = workloads(pair(args.steps_mlp), pair(args.steps_cnn), args.epoch_scale)
    print(_common.machine(), f"clock: {args.clock}")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            for threads in (int(t) for t in args.threads.split(",")):
                _common.set_threads(threads)
                results = measure(works[name], variants, args.rounds, Path(folder), (name, threads, args))
                print()
                print(report(works[name], threads, results), flush=True)


if __name__ == "__main__":
    main()
