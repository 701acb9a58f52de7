"""ember.metrics: metrics as pure functions, over torchmetrics, sacrebleu and pycocotools.

Low in the layers, so that tasks (their validation metrics) and the evaluation stage (scorecards,
reports, statistics) use the same functions. Tensors in, floats (or small tensors) out; see
:mod:`ember.metrics.functional` for the conventions. torchmetrics, sacrebleu and pycocotools load
inside the functions that use them.

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
