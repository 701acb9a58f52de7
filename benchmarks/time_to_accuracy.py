"""Wall time to a test accuracy: ember's default recipes against a typical tutorial recipe.

For each data set, the same model (built from the recipe, same seed) on the same split trains two ways:

- ``ember``: the recipe in ``configs/`` through ``ember.Trainer`` with everything it does by default
  (run store, validation and a checkpoint every epoch, its schedule, precision and augmentation);
- ``tutorial``: plain PyTorch as a tutorial writes it: Adam lr 1e-3, batch 64, no schedule, no
  augmentation, fp32; batches drawn from in-memory tensors (``randperm`` + ``index_select``, no
  ``DataLoader`` collation, so the tutorial is not slowed by its data pipeline).

After every epoch each is scored on the test split; the clock stops while it is (the time excludes
that test pass for both; ember's own validation pass and checkpoint stay in its time). The tutorial
trains as many epochs as the recipe unless ``--tutorial-epochs`` says otherwise. Reported: the
tutorial's final test accuracy and time, the time ember needs to first reach that same accuracy and
the ratio of the two (the issue's target: at most 1/3), and each one's time to the absolute target
(98.5% on digits, 93% on Fashion-MNIST). With ``--rounds R`` the two take turns R times and the
ratio is the median of per-round ratios.

Usage:
    python benchmarks/time_to_accuracy.py --only digits --rounds 3
    python benchmarks/time_to_accuracy.py --only fashion
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common
import torch
import torch.nn.functional as F

from ember.config import Config, load_config
from ember.data import build_augment, make_loader, save_splits
from ember.recipe import Prepared, build_model, prepare
from ember.tasks import create as create_task
from ember.track import seed_everything
from ember.train.loop import evaluate
from ember.train.precision import resolve_precision
from ember.train.state import TrainState
from ember.train.trainer import Trainer

DATASETS = {
    "digits": ("configs/digits-cnn.yaml", 0.985),
    "fashion": ("configs/fashion-resnet.yaml", 0.93),
}


@dataclass
class Curve:
    """Test accuracy after each epoch and the training time (seconds) spent until then."""

    name: str
    epochs: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)

    def time_to(self, target: float) -> float | None:
        """Seconds until the first epoch whose test accuracy is >= ``target`` (None: never)."""
        return next((s for s, a in zip(self.seconds, self.accuracy) if a >= target - 1e-9), None)

    def epoch_to(self, target: float) -> int | None:
        return next((e for e, a in zip(self.epochs, self.accuracy) if a >= target - 1e-9), None)


class Clock:
    """Wall time with the test passes taken out."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.paused = 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.started - self.paused

    def test(self, curve: Curve, epoch: int, score: Any) -> None:
        """Record ``score()`` (the test accuracy) for ``epoch`` without counting its time."""
        stop = time.perf_counter()
        seconds = stop - self.started - self.paused
        accuracy = float(score())
        curve.epochs.append(epoch)
        curve.seconds.append(seconds)
        curve.accuracy.append(accuracy)
        print(f"  {curve.name} epoch {epoch}: test accuracy {accuracy:.4f} after {seconds:.1f} s", flush=True)
        self.paused += time.perf_counter() - stop


class TestEveryEpoch:
    """An ember callback: score the test split at each epoch end, off the clock."""

    def __init__(self, clock: Clock, curve: Curve, test_loader: Any, task: Any) -> None:
        self.clock, self.curve, self.test_loader, self.task = clock, curve, test_loader, task

    def on_epoch_end(self, state: TrainState) -> None:
        def score() -> float:
            return evaluate(state.model, self.test_loader, self.task, state=state)["accuracy"]

        self.clock.test(self.curve, state.epoch, score)


def run_ember(cfg: Config, prep: Prepared, runs_dir: Path) -> Curve:
    """The recipe as ``ember.fit`` runs it, plus the off-the-clock test pass per epoch."""
    curve = Curve("ember")
    task = create_task(cfg.task.name, **cfg.task.options)
    device = torch.device("cpu")
    test_loader = make_loader(prep.test, batch_size=cfg.data.eval_batch_size, shuffle=False)
    clock = Clock()
    augment = build_augment(
        cfg.data.augment, num_classes=prep.bundle.num_classes, image_size=prep.bundle.input_shape[-1]
    )
    trainer = Trainer(
        prep.model,
        config=cfg,
        augment=augment,
        runs_dir=runs_dir,
        progress=False,
        callbacks=[TestEveryEpoch(clock, curve, test_loader, task)],
    )
    assert trainer.device == device, "this benchmark is for the CPU"
    trainer.data_sha256 = prep.data_sha256
    run = trainer.start_run()
    save_splits(prep.splits, run.dir / "splits")
    trainer.fit(prep.train, prep.val)
    return curve


def run_tutorial(cfg: Config, prep: Prepared, epochs: int, *, channels_last: bool = False) -> Curve:
    """Adam 1e-3, batch 64, constant lr, no augmentation, fp32, on the recipe's model and split.

    The model is the recipe's architecture with the same seed; a recipe's ``channels_last`` memory
    format is a speed setting like its precision, so the tutorial keeps PyTorch's default (NCHW)
    unless ``channels_last``.
    """
    curve = Curve("tutorial")
    if "channels_last" in cfg.model.options:
        options = {**cfg.model.options, "channels_last": channels_last}
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, options=options))
    seed_everything(cfg.trainer.seed)
    model = build_model(cfg, prep.bundle)
    task = create_task("classification")
    fp32 = resolve_precision("fp32", torch.device("cpu"))
    test_loader = make_loader(prep.test, batch_size=cfg.data.eval_batch_size, shuffle=False)
    x, y = prep.train.x, prep.train.y
    generator = torch.Generator().manual_seed(cfg.trainer.seed)
    clock = Clock()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), 64):
            index = order[start : start + 64]
            loss = F.cross_entropy(model(x.index_select(0, index)), y.index_select(0, index))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        def score() -> float:
            return evaluate(model, test_loader, task, precision=fp32)["accuracy"]

        clock.test(curve, epoch, score)
    return curve


def _fmt_time(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.1f}"


def benchmark(name: str, args: argparse.Namespace) -> None:
    path, target = DATASETS[name]
    cfg = load_config(_common.ROOT / path, args.set)
    if args.threads:
        cfg = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, threads=args.threads))
    _common.set_threads(cfg.trainer.threads or torch.get_num_threads())
    tutorial_epochs = args.tutorial_epochs or cfg.trainer.epochs
    print(
        f"\n## {name}: {path} ({cfg.trainer.epochs} epochs) vs tutorial ({tutorial_epochs} epochs), "
        f"{torch.get_num_threads()} thread(s)"
    )
    ratios: list[float] = []
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory() as folder:
        for r in range(args.rounds):
            pair: dict[str, Curve] = {}
            for who in _common.rotate(["tutorial", "ember"], r):
                prep = prepare(cfg)  # fresh data and model, seeded: the same split and init every time
                if who == "ember":
                    pair[who] = run_ember(cfg, prep, Path(folder) / "runs")
                else:
                    pair[who] = run_tutorial(
                        cfg, prep, tutorial_epochs, channels_last=args.tutorial_channels_last
                    )
                print(f"round {r + 1} {who}: " + " ".join(f"{a:.4f}" for a in pair[who].accuracy), flush=True)
            tut, emb = pair["tutorial"], pair["ember"]
            reached = tut.accuracy[-1]
            ember_time = emb.time_to(reached)
            ratio = ember_time / tut.seconds[-1] if ember_time is not None else float("inf")
            ratios.append(ratio)
            rows.append(
                [
                    str(r + 1),
                    f"{reached:.4f} in {tut.seconds[-1]:.1f} s ({tut.epochs[-1]} ep)",
                    f"{_fmt_time(ember_time)} s (ep {emb.epoch_to(reached)})",
                    f"{ratio:.2f}",
                    f"{emb.accuracy[-1]:.4f} in {emb.seconds[-1]:.1f} s",
                    f"{_fmt_time(emb.time_to(target))} / {_fmt_time(tut.time_to(target))}",
                ]
            )
    header = [
        "round",
        "tutorial final test acc",
        "ember time to that acc",
        "ratio",
        "ember final test acc",
        f"time to {target:.1%}: ember / tutorial (s)",
    ]
    print(_common.table(header, rows))
    print(
        f"median ratio (ember time to the tutorial's final accuracy / tutorial time): {_common.median(ratios):.2f}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=sorted(DATASETS), action="append", help="run only this data set")
    parser.add_argument("--rounds", type=int, default=1, help="tutorial/ember pairs, order alternating")
    parser.add_argument("--tutorial-epochs", type=int, default=0, help="default: the recipe's epochs")
    parser.add_argument(
        "--tutorial-channels-last",
        action="store_true",
        help="give the tutorial the recipe's channels_last memory format too (default: NCHW)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--set", action="append", default=[], help="a recipe override, e.g. trainer.epochs=5")
    args = parser.parse_args(argv)
    print(_common.machine())
    for name in args.only or list(DATASETS):
        benchmark(name, args)


if __name__ == "__main__":
    main()
