"""ember.evaluate: evaluation that can be trusted, for every task through its contract.

- :func:`run_predictions`: a finished run's evaluation pass on one of its splits (or given arrays),
  read through :func:`ember.recipe.load_run`, so recipe runs and Python runs alike.
- :mod:`~ember.evaluate.stats`: bootstrap intervals, the paired bootstrap, McNemar's test.
- :func:`scorecard`: metrics with intervals beside the baselines and the margin over each;
  :func:`compare`: is run B really better than run A? What is resampled and which baselines are
  fitted is the task's answer (``evidence``, ``baselines`` in `ember.tasks.contract`; the pieces in
  :mod:`ember.metrics`).
- :func:`write_report`: one self-contained HTML page about a run (the task's ``report_items``).
- :mod:`~ember.evaluate.checks`: overfitting, leakage, shift and imbalance, as the task allows.
- :mod:`~ember.evaluate.human`: blinded rating sheets and their analysis.

The metrics themselves are pure functions in :mod:`ember.metrics`, lower in the layers (tasks use
them too).

Nothing here is imported by ``import ember``; torchmetrics, scikit-learn and matplotlib load inside the
functions that use them.

Example:
    >>> import numpy as np
    >>> from ember.evaluate import bootstrap_ci
    >>> scores = np.arange(10.0)
    >>> str(bootstrap_ci(lambda w: w @ scores / 10, 10, seed=1))
    '4.5000 [2.7000, 6.3000]'
"""

from ember.evaluate import stats
from ember.evaluate.predictions import RunPredictions, run_predictions
from ember.evaluate.report import write_report
from ember.evaluate.scorecard import BaselineScore, Comparison, Scorecard, comparable, compare, scorecard
from ember.evaluate.stats import (
    Interval,
    McNemar,
    PairedTest,
    bootstrap,
    bootstrap_ci,
    mcnemar,
    paired_bootstrap,
)

__all__ = [
    "BaselineScore",
    "Comparison",
    "Interval",
    "McNemar",
    "PairedTest",
    "RunPredictions",
    "Scorecard",
    "bootstrap",
    "bootstrap_ci",
    "comparable",
    "compare",
    "mcnemar",
    "paired_bootstrap",
    "run_predictions",
    "scorecard",
    "stats",
    "write_report",
]
