"""ember.metrics: metrics and baselines as pure functions, over torchmetrics, sacrebleu and pycocotools.

Low in the layers, so that tasks (their validation metrics, their evaluation's evidence and
baselines, see `ember.tasks.contract`) and the evaluation stage (bootstrap, scorecards, reports)
use the same pieces. Tensors in, floats (or small tensors) out:

- :mod:`~ember.metrics.functional`: the metric functions (re-exported here);
- :mod:`~ember.metrics.statistics`: :class:`~ember.metrics.statistics.Evidence`, the classification
  and regression metrics as weighted statistics (what the bootstrap resamples);
- :mod:`~ember.metrics.baselines`: majority / mean, logistic regression, gradient boosting, n-grams;
- :mod:`~ember.metrics.lm`, :mod:`~ember.metrics.detection`, :mod:`~ember.metrics.segmentation`,
  :mod:`~ember.metrics.translation`: what those families resample (blocks of text, images,
  sentences) and their baselines; :mod:`~ember.metrics.components` the connected-components
  baseline they share; :mod:`~ember.metrics.coco`: COCO box mAP by pycocotools.

torchmetrics, scikit-learn, scipy, pycocotools and sacrebleu load inside the functions that use them.

Example:
    >>> import torch
    >>> from ember import metrics
    >>> metrics.accuracy(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]))
    0.6666666865348816
"""

from ember.metrics.functional import (
    Reliability,
    accuracy,
    auroc,
    bleu,
    calibration_error,
    chrf,
    classification_metrics,
    confusion_matrix,
    detection_map,
    f1,
    mae,
    mean_iou,
    mse,
    per_class,
    per_class_iou,
    perplexity,
    precision,
    probabilities,
    r2,
    recall,
    regression_metrics,
    reliability,
    top_k_accuracy,
)

__all__ = [
    "Reliability",
    "accuracy",
    "auroc",
    "bleu",
    "calibration_error",
    "chrf",
    "classification_metrics",
    "confusion_matrix",
    "detection_map",
    "f1",
    "mae",
    "mean_iou",
    "mse",
    "per_class",
    "per_class_iou",
    "perplexity",
    "precision",
    "probabilities",
    "r2",
    "recall",
    "regression_metrics",
    "reliability",
    "top_k_accuracy",
]
