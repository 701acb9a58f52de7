"""``ember profile RUN``: a few training steps of a finished run's recipe, profiled.

The run's final weights are copied into a fresh model, trained for ``skip + steps`` steps on the
run's own training split with its own config (optimizer, precision, batch size, compile) in a
throw-away run store, with :class:`~ember.train.profile.StepProfiler` watching: the run itself is
not touched. The answer says where a step's time goes by op category and the MFU it reached.

Example:
    >>> import ember, tempfile
    >>> runs = tempfile.mkdtemp()
    >>> run = ember.fit("configs/digits-cnn.yaml", {"trainer.epochs": 1, "model.name": "cnn_tiny"}, runs_dir=runs)
    >>> profile = profile_run(run.run_id, steps=3, skip=1, runs_dir=runs)
    >>> profile.steps, round(sum(profile.shares.values()), 6)
    (3, 1.0)
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
from pathlib import Path

from ember.recipe.load import load_run
from ember.train.profile import StepProfile, StepProfiler
from ember.train.trainer import Trainer


def profile_run(
    ref: str, *, steps: int = 10, skip: int = 5, runs_dir: str | Path | None = None
) -> StepProfile:
    """Profile ``steps`` training steps (after ``skip`` warm-up steps) of run ``ref``'s recipe."""
    run = load_run(ref, runs_dir=runs_dir)
    cfg = run.config
    trainer_cfg = dataclasses.replace(cfg.trainer, epochs=1, max_steps=skip + steps, checkpoint_every=0)
    profiler = StepProfiler(steps=steps, skip=skip)
    with tempfile.TemporaryDirectory(prefix="ember-profile-") as scratch:
        trainer = Trainer(
            copy.deepcopy(run.model).train(),
            task=run.task,
            config=dataclasses.replace(cfg, trainer=trainer_cfg),
            runs_dir=scratch,
            progress=False,
            spec=run.spec,
            record_data=False,
            callbacks=[profiler],
        )
        trainer.fit(run.split("train"))
    if profiler.result is None:
        raise ValueError(f"run {run.id}'s training split gave fewer than {skip + 1} steps to profile")
    return profiler.result


__all__ = ["profile_run"]
