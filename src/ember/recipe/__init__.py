"""Recipes: config → objects → a run, and a finished run rebuilt for the stages after training.

- :mod:`ember.recipe.build`: the data, splits, model, task and model spec of a config;
- :mod:`ember.recipe.train`: a config trained end to end into the run store (``ember.fit``);
- :mod:`ember.recipe.load`: a finished run's model, task, tokenizer and data (:func:`load_run`),
  what every stage starts from;
- :mod:`ember.recipe.fits`: whether a config's task and model fit its data, in one line if not;
- :mod:`ember.recipe.starter`: a survey of the user's own data and the config that trains on it
  (``ember init``).
"""

from ember.recipe.build import Prepared, build_model, build_task, check, model_spec, prepare, task_for
from ember.recipe.load import LoadedRun, evaluate_run, load_language_model, load_run, load_run_model
from ember.recipe.train import final_task, train

__all__ = [
    "LoadedRun",
    "Prepared",
    "build_model",
    "build_task",
    "check",
    "evaluate_run",
    "final_task",
    "load_language_model",
    "load_run",
    "load_run_model",
    "model_spec",
    "prepare",
    "task_for",
    "train",
]
