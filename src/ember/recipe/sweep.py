"""``ember sweep``: a hyperparameter search on Optuna, every trial a normal run in the store.

A sweep is an Optuna study in an RDB storage (SQLite beside the run store by default; a PostgreSQL
or MySQL URL lets workers on several machines share one study). ``workers`` processes each pull
trials from the same study until ``trials`` are done. A trial is ``ember.fit(config, overrides)``
with the trial's values as dotted overrides, named ``<study>-t<N>``, so it is an ordinary
run (``ember runs``, ``eval``, ``report`` ... all work); the trial records its run id
(``user_attrs["run_id"]``) and the run records its sweep (``sweep.json`` in its folder). After each
validation the trial reports the monitored metric, and Optuna's median pruner stops trials that fall
behind the others at the same epoch (the run ends ``completed`` with stop reason ``pruned``).

Search spaces (``--param``), one per key:

- ``optim.lr=log:1e-4,1e-1``   a float, sampled on a log scale
- ``optim.weight_decay=float:0,0.1``   a float, uniform
- ``model.width=int:16,64``    an integer
- ``optim.name=choice:adam,sgd``   one of the listed values (parsed as YAML: numbers stay numbers)

Example:
    >>> space = parse_space(["optim.lr=log:1e-4,1e-1", "optim.name=choice:adam,sgd"])
    >>> space["optim.lr"], space["optim.name"]
    (('log', 0.0001, 0.1), ('choice', ['adam', 'sgd']))
"""

from __future__ import annotations

import json
import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ember._registry import did_you_mean
from ember.config import ConfigError, load_config
from ember.track import RunStore
from ember.train.state import TrainState

KINDS = ("log", "float", "int", "choice")


@dataclass
class SweepResult:
    """A finished sweep: the study's trials and the best one."""

    study: str
    storage: str
    metric: str
    direction: str
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None


def parse_space(params: list[str]) -> dict[str, tuple[Any, ...]]:
    """``["key=kind:a,b", ...]`` → ``{key: (kind, a, b)}`` (``choice``: ``(kind, [values])``)."""
    space: dict[str, tuple[Any, ...]] = {}
    for item in params:
        key, sep, spec = item.partition("=")
        kind, colon, values = spec.partition(":")
        if not sep or not colon or kind not in KINDS or not key:
            raise ValueError(
                f"--param '{item}' must look like KEY=KIND:VALUES with KIND one of {', '.join(KINDS)}, "
                "e.g. optim.lr=log:1e-4,1e-1 or optim.name=choice:adam,sgd" + did_you_mean(kind, list(KINDS))
            )
        parts = [_value(v.strip()) for v in values.split(",") if v.strip()]
        if kind == "choice":
            if not parts:
                raise ValueError(f"--param '{item}': a choice needs at least one value")
            space[key] = ("choice", parts)
            continue
        if len(parts) != 2 or not all(isinstance(v, int | float) for v in parts) or parts[0] >= parts[1]:
            raise ValueError(f"--param '{item}': {kind} takes LOW,HIGH numbers with LOW < HIGH")
        if kind == "log" and parts[0] <= 0:
            raise ValueError(f"--param '{item}': a log range needs LOW > 0")
        if kind == "int" and not all(isinstance(v, int) for v in parts):
            raise ValueError(f"--param '{item}': int takes whole numbers")
        space[key] = (kind, parts[0], parts[1])
    if not space:
        raise ValueError("a sweep needs at least one --param KEY=KIND:VALUES")
    return space


def sample(trial: Any, space: dict[str, tuple[Any, ...]]) -> dict[str, Any]:
    """One point of ``space`` drawn by an Optuna trial."""
    point: dict[str, Any] = {}
    for key, (kind, *args) in space.items():
        if kind == "log":
            point[key] = trial.suggest_float(key, args[0], args[1], log=True)
        elif kind == "float":
            point[key] = trial.suggest_float(key, args[0], args[1])
        elif kind == "int":
            point[key] = trial.suggest_int(key, args[0], args[1])
        else:
            point[key] = trial.suggest_categorical(key, args[0])
    return point


class PruneCallback:
    """Reports the monitored validation metric to the trial after each validation; stops the run when
    Optuna prunes it."""

    def __init__(self, trial: Any, metric: str) -> None:
        self.trial, self.metric, self.pruned = trial, metric, False

    def on_validation_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        value = metrics.get(self.metric)
        if value is None:
            return
        self.trial.report(value, step=state.epoch)
        if self.trial.should_prune():
            self.pruned = True
            state.should_stop, state.stop_reason = True, f"pruned by the sweep at epoch {state.epoch}"


def sweep(
    config: str | Path,
    params: list[str],
    *,
    overrides: list[str] | None = None,
    trials: int = 20,
    workers: int = 1,
    study: str = "",
    storage: str = "",
    runs_dir: str | Path | None = None,
    seed: int = 0,
    prune: bool = True,
) -> SweepResult:
    """Run (or continue) a sweep of ``config`` over ``params`` (see the module docstring).

    Args:
        config: the recipe.
        params: the search space, ``KEY=KIND:VALUES`` each.
        overrides: fixed dotted overrides for every trial.
        trials: trials to run in all (across workers; a continued study counts its finished ones).
        workers: processes pulling trials from the study at the same time.
        study: the study's name (default: the config's name).
        storage: an Optuna RDB URL (default: ``sqlite:///<runs_dir>/sweeps.db``).
        seed: the sampler's seed (each worker offsets it by its index).
        prune: stop trials that fall behind at the same epoch (median pruner).
    """
    optuna = _optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = parse_space(params)
    first = {k: v[1][0] if v[0] == "choice" else v[1] for k, v in space.items()}  # any point checks the keys
    cfg = load_config(config, list(overrides or []) + [f"{k}={_yaml(v)}" for k, v in first.items()])
    from ember.recipe.build import check, task_for

    check(cfg)  # every key of the space must exist: a typo fails before any trial
    task = task_for(cfg.task.name, cfg.task.options)
    metric = cfg.trainer.monitor or f"val/{task.headline}"
    direction = "maximize" if (task.mode == "max" and metric.removeprefix("val/") == task.headline) else (
        "minimize" if "loss" in metric or task.mode == "min" else "maximize"
    )  # fmt: skip
    name = study or cfg.name or Path(str(config)).stem
    root = RunStore(runs_dir).root
    root.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(root / 'sweeps.db').resolve()}"
    created = optuna.create_study(
        study_name=name, storage=_storage(url), direction=direction, load_if_exists=True
    )
    left = max(0, trials - sum(t.state.is_finished() for t in created.trials))
    workers = max(1, min(workers, left))
    # each worker's share of the trials left, fixed now: workers asking at the same moment never
    # run more than `trials` in all
    shares = [left // workers + (i < left % workers) for i in range(workers)]
    job = {
        "config": str(config), "overrides": list(overrides or []), "space": space, "metric": metric,
        "study": name, "storage": url, "runs_dir": str(root), "trials": trials, "seed": seed, "prune": prune, "shares": shares,
    }  # fmt: skip
    if workers <= 1:
        _worker(job, 0)
    else:
        ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no torch thread pools forked
        procs = [ctx.Process(target=_worker, args=(job, i)) for i in range(workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        failed = [p.exitcode for p in procs if p.exitcode]
        if failed:
            raise RuntimeError(
                f"{len(failed)} sweep worker(s) failed (exit codes {failed}); see their output"
            )
    return summarize(name, url, metric)


def summarize(name: str, storage: str, metric: str = "") -> SweepResult:
    """The trials of study ``name`` in ``storage``, and its best one."""
    optuna = _optuna()
    loaded = optuna.load_study(study_name=name, storage=_storage(storage))
    rows = [
        {"number": t.number, "state": t.state.name.lower(), "value": t.value, "params": t.params,
         "run_id": t.user_attrs.get("run_id")}
        for t in loaded.trials
    ]  # fmt: skip
    complete = [r for r in rows if r["state"] == "complete" and r["value"] is not None]
    best = None
    if complete:
        pick = max if loaded.direction.name == "MAXIMIZE" else min
        best = pick(complete, key=lambda r: r["value"])
    return SweepResult(name, storage, metric, loaded.direction.name.lower(), rows, best)


def _worker(job: dict[str, Any], index: int) -> None:
    optuna = _optuna()
    from ember.recipe.train import train

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=job["seed"] + index)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2) if job["prune"] else optuna.pruners.NopPruner()
    study = optuna.load_study(
        study_name=job["study"], storage=_storage(job["storage"]), sampler=sampler, pruner=pruner
    )

    def objective(trial: Any) -> float:
        point = sample(trial, job["space"])
        name = f"{job['study']}-t{trial.number}"
        overrides = job["overrides"] + [f"{k}={_yaml(v)}" for k, v in point.items()] + [f"name={name}"]
        pruner_cb = PruneCallback(trial, job["metric"])
        result = train(
            job["config"], overrides, runs_dir=job["runs_dir"], progress=False, callbacks=[pruner_cb]
        )
        trial.set_user_attr("run_id", result.run_id)
        (result.run_dir / "sweep.json").write_text(
            json.dumps(
                {"study": job["study"], "storage": job["storage"], "trial": trial.number, "params": point}
            )
        )
        if pruner_cb.pruned:
            raise optuna.TrialPruned()
        value = result.metrics.get(job["metric"])
        if value is None:
            raise ValueError(
                f"the run logged no {job['metric']} (a validation split is needed to sweep on it)"
            )
        return float(value)

    # a worker runs its share; it also stops once the study holds `trials` trials, whoever ran them
    # (other `ember sweep` processes on the same storage, another machine's)
    enough = optuna.study.MaxTrialsCallback(job["trials"], states=None)
    if job["shares"][index]:
        study.optimize(objective, n_trials=job["shares"][index], callbacks=[enough], catch=())


def _storage(url: str) -> Any:
    optuna = _optuna()
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def _value(text: str) -> Any:
    """A number when ``text`` is one (``1e-4`` too, which YAML 1.1 reads as a string), else YAML."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def _yaml(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ConfigError("ember sweep needs Optuna: pip install 'ember[tune]'") from None
    return optuna


__all__ = ["KINDS", "PruneCallback", "SweepResult", "parse_space", "sample", "summarize", "sweep"]
