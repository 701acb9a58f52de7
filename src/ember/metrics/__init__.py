"""ember.metrics: metrics and baselines as pure functions, low in the layers.

Tasks (their evaluation's evidence and baselines, see `ember.tasks.contract`) and the evaluation
stage (bootstrap, scorecards, reports) use the same pieces:

- :mod:`~ember.metrics.statistics`: :class:`~ember.metrics.statistics.Evidence`, the classification
  and regression metrics as weighted statistics (what the bootstrap resamples);
- :mod:`~ember.metrics.baselines`: majority / mean, logistic regression, gradient boosting, n-grams;
- :mod:`~ember.metrics.lm`, :mod:`~ember.metrics.detection`, :mod:`~ember.metrics.segmentation`,
  :mod:`~ember.metrics.translation`: what those families resample (blocks of text, images,
  sentences) and their baselines; :mod:`~ember.metrics.components` the connected-components
  baseline they share.

scikit-learn, scipy, pycocotools and sacrebleu load inside the functions that use them.
"""
