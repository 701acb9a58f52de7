"""ember.evaluate: evaluation that can be trusted.

- :mod:`~ember.evaluate.stats`: bootstrap intervals, the paired bootstrap, McNemar's test.
- :mod:`~ember.evaluate.baselines`: majority / mean, logistic regression, gradient boosting, n-grams.
- :func:`run_predictions`: a finished run's outputs and targets on one of its splits.
- :func:`scorecard`: metrics with intervals beside the baselines and the margin over each;
  :func:`compare`: is run B really better than run A?
- :mod:`~ember.evaluate.language_model`, :mod:`~ember.evaluate.detection`,
  :mod:`~ember.evaluate.segmentation`: what those tasks resample (blocks of text, images) and their
  baselines (n-grams; class-prior boxes, all background; connected components + logistic regression).
- :func:`write_report`: one self-contained HTML page about a run.

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

from ember.evaluate import baselines, stats
from ember.evaluate.baselines import Baseline
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
    "Baseline",
    "BaselineScore",
    "Comparison",
    "Interval",
    "McNemar",
    "PairedTest",
    "RunPredictions",
    "Scorecard",
    "baselines",
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
