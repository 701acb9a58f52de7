"""Finders: a learning rate from a range test, and the largest batch that fits a memory budget.

**LR range test** (Smith 2017, as fastai's ``lr_find``): train the recipe's model from its initial
weights for up to ``steps`` steps while the learning rate grows exponentially from ``start_lr`` to
``end_lr``, recording the smoothed training loss; stop once it exceeds four times its best (or turns
non-finite). The suggestion is the learning rate where the smoothed loss falls fastest (the steepest
negative slope in log-lr) before its minimum. It runs in the one training loop (a callback sets the
learning rate each step) in a scratch run store, so the run store is not touched.

**Batch-size finder**: the peak memory of a training step at batch sizes doubling from ``start``, each
measured in a fresh child process (CPU: its peak resident set; CUDA: ``max_memory_allocated``), then
a binary search between the last size that fit ``memory_mb`` and the first that did not.

Example:
    >>> finding = find_lr("configs/digits-cnn.yaml", {"model.name": "cnn_tiny"}, steps=20)
    >>> 1e-7 <= finding.suggestion <= 10.0 and len(finding.lrs) == len(finding.losses) > 5
    True
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ember.config import Config, dump_yaml, load_config
from ember.recipe.build import build_task, prepare
from ember.train.loop import NonFiniteLossError
from ember.train.state import TrainState
from ember.train.trainer import Trainer


@dataclass
class LRFinding:
    """What :func:`find_lr` saw: learning rates, smoothed losses, the suggestion."""

    lrs: list[float]
    losses: list[float]
    suggestion: float
    stopped: str = ""
    """Why the test ended before ``end_lr`` (loss diverged, non-finite), or empty."""

    def plot(self, path: str | Path) -> Path:
        """Save the loss-vs-learning-rate curve with the suggestion marked (PNG)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.6))
        ax.plot(self.lrs, self.losses)
        ax.axvline(self.suggestion, color="tab:red", linestyle="--", label=f"suggested {self.suggestion:.2g}")
        ax.set(xscale="log", xlabel="learning rate", ylabel="training loss (smoothed)", title="LR range test")
        ax.legend()
        fig.tight_layout()
        out = Path(path)
        fig.savefig(out, dpi=120)
        plt.close(fig)
        return out


class _Ramp:
    """A callback: the learning rate grows from ``start`` to ``end`` over ``steps``; the loss is recorded."""

    def __init__(self, start: float, end: float, steps: int, smooth: float) -> None:
        self.start, self.end, self.steps, self.smooth = start, end, steps, smooth
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.avg = 0.0
        self.best = math.inf
        self.stopped = ""

    def lr_at(self, step: int) -> float:
        return self.start * (self.end / self.start) ** (step / max(1, self.steps - 1))

    def on_fit_start(self, state: TrainState) -> None:
        self._set(state, self.lr_at(0))

    def on_log(self, state: TrainState, metrics: dict[str, float]) -> None:
        loss = metrics["train/loss"]
        n = len(self.losses) + 1
        self.avg = self.smooth * self.avg + (1 - self.smooth) * loss
        smoothed = self.avg / (1 - self.smooth**n)  # bias-corrected, as an Adam moment
        self.lrs.append(state.lr)
        self.losses.append(smoothed)
        self.best = min(self.best, smoothed)
        if smoothed > 4 * self.best:
            state.should_stop, self.stopped = True, f"loss rose above 4x its best at lr {state.lr:.3g}"
        self._set(state, self.lr_at(state.step))

    @staticmethod
    def _set(state: TrainState, lr: float) -> None:
        for group in state.optimizer.param_groups:
            group["lr"] = lr


def find_lr(
    config: str | Path | dict[str, Any] | Config,
    overrides: list[str] | dict[str, Any] | None = None,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 100,
    smooth: float = 0.9,
) -> LRFinding:
    """Run the LR range test on a recipe (see the module docstring)."""
    if not 0 < start_lr < end_lr:
        raise ValueError(f"need 0 < start_lr < end_lr; got {start_lr} and {end_lr}")
    if steps < 5:
        raise ValueError(f"an LR range test needs at least 5 steps; got {steps}")
    cfg = load_config(config, overrides)
    prep = prepare(cfg)
    ramp = _Ramp(start_lr, end_lr, steps, smooth)
    trainer_cfg = dataclasses.replace(
        cfg.trainer, epochs=10**6, max_steps=steps, log_every=1, checkpoint_every=0, early_stopping_metric=""
    )
    schedule = dataclasses.replace(cfg.schedule, name="constant", warmup=0.0)
    with tempfile.TemporaryDirectory(prefix="ember-find-lr-") as scratch:
        trainer = Trainer(
            prep.model,
            task=build_task(cfg, prep.bundle),
            config=dataclasses.replace(cfg, trainer=trainer_cfg, schedule=schedule),
            runs_dir=scratch,
            progress=False,
            record_data=False,
            callbacks=[ramp],
        )
        try:
            trainer.fit(prep.train)  # no validation: the test reads the training loss only
        except NonFiniteLossError:
            ramp.stopped = ramp.stopped or "the loss became non-finite"
    if len(ramp.losses) < 3:
        raise ValueError("the range test stopped after fewer than 3 steps; lower end_lr or check the data")
    return LRFinding(ramp.lrs, ramp.losses, _steepest(ramp.lrs, ramp.losses), ramp.stopped)


def _steepest(lrs: list[float], losses: list[float]) -> float:
    """The learning rate of the steepest fall of ``losses`` in log-lr, before their minimum."""
    end = max(2, losses.index(min(losses)) + 1)
    slopes = [
        (losses[i + 1] - losses[i]) / (math.log(lrs[i + 1]) - math.log(lrs[i]) or 1e-12)
        for i in range(end - 1)
    ]
    i = min(range(len(slopes)), key=slopes.__getitem__)
    return lrs[i]


# --------------------------------------------------------------------------- batch size


@dataclass
class BatchFinding:
    """What :func:`find_batch_size` measured: batch size → peak MB, and the largest that fits."""

    peak_mb: dict[int, float] = field(default_factory=dict)
    batch_size: int | None = None
    budget_mb: float = 0.0
    device: str = "cpu"


def find_batch_size(
    config: str | Path | dict[str, Any] | Config,
    overrides: list[str] | dict[str, Any] | None = None,
    *,
    memory_mb: float,
    start: int = 8,
    limit: int = 1 << 16,
    steps: int = 2,
) -> BatchFinding:
    """The largest training batch whose step stays under ``memory_mb`` (see the module docstring)."""
    cfg = load_config(config, overrides)
    prepare(cfg)  # fetch and check the data once, before the children read it
    finding = BatchFinding(budget_mb=memory_mb, device=cfg.trainer.device)
    fits, fails, size = 0, 0, start
    while size <= limit:
        peak = _probe(cfg, size, steps)
        finding.peak_mb[size] = peak
        if peak > memory_mb:
            fails = size
            break
        fits, size = size, size * 2
    while fails and fails - fits > max(1, fits // 8):  # binary search to within an eighth
        mid = (fits + fails) // 2
        peak = _probe(cfg, mid, steps)
        finding.peak_mb[mid] = peak
        fits, fails = (mid, fails) if peak <= memory_mb else (fits, mid)
    finding.batch_size = fits or None
    return finding


def _probe(cfg: Config, batch_size: int, steps: int) -> float:
    """Peak MB of ``steps`` training steps at ``batch_size``, in a fresh child process."""
    probe = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, batch_size=batch_size),
        trainer=dataclasses.replace(cfg.trainer, epochs=1, max_steps=steps, checkpoint_every=0),
    )
    with tempfile.TemporaryDirectory(prefix="ember-find-batch-") as scratch:
        path = Path(scratch) / "probe.yaml"
        path.write_text(dump_yaml(probe))
        code = "from ember.recipe.find import _child; _child()"
        env = {**os.environ, "EMBER_RUNS": scratch}
        done = subprocess.run(
            [sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env, check=False
        )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        if "out of memory" in done.stderr.lower() or done.returncode in (-9, 137):
            return math.inf
        raise RuntimeError(f"the batch-size probe at {batch_size} failed: {last}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"])


def _child() -> None:
    """The probe process: train a few steps, print the peak memory as JSON."""
    import resource

    import torch

    cfg = load_config(sys.argv[1])
    prep = prepare(cfg)
    trainer = Trainer(
        prep.model, task=build_task(cfg, prep.bundle), config=cfg, progress=False, record_data=False
    )
    trainer.fit(prep.train)  # training steps only: no validation pass adds its own peak
    cuda = trainer.device.type == "cuda"
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:  # ru_maxrss is in KiB on Linux
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_mb": peak}))


__all__ = ["BatchFinding", "LRFinding", "find_batch_size", "find_lr"]
