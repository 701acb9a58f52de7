"""The model-randomization sanity check of Adebayo et al. (2018), "Sanity Checks for Saliency Maps".

An explanation that describes the *model* must change when the model's weights are replaced by
random ones. Cascading randomization re-draws the weights layer by layer from the output down (each
parameter from a normal of its own standard deviation), recomputes the attributions on the same
inputs after each layer, and measures the Spearman rank correlation of their absolute values with
the original ones (per input, then the mean). A method whose maps stay correlated while the layers
are re-drawn (the mean correlation over the cascade at or above ``threshold``, default 0.5) fails:
what it shows comes from the input, not from what the model learned. Guided backpropagation is the
known failure; plain gradients and Grad-CAM pass. Integrated gradients multiply by the input, and
their absolute maps keep its shape on a random model too (as Adebayo et al. found): they fail the
check as it is defined here, which the output says rather than hides.

Example:
    >>> import torch
    >>> from ember.models import create
    >>> from ember.responsible.attribution import saliency
    >>> model = create("cnn_tiny", in_channels=1, image_size=8).eval()
    >>> check = cascading_randomization(model, torch.rand(4, 1, 8, 8), saliency)
    >>> len(check.correlations) == len(check.layers)
    True
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ember.responsible.attribution import Attribution

THRESHOLD = 0.5


@dataclass
class SanityResult:
    """Rank correlation with the original maps after each layer (top first) is randomized."""

    layers: list[str]
    correlations: list[float]
    threshold: float = THRESHOLD

    @property
    def final(self) -> float:
        """The correlation once every layer is random."""
        return self.correlations[-1] if self.correlations else float("nan")

    @property
    def score(self) -> float:
        """The mean correlation over the cascade (how much the maps survive randomization)."""
        return float(np.mean(self.correlations)) if self.correlations else float("nan")

    @property
    def passed(self) -> bool:
        """The maps lost their likeness to the original as the model was randomized."""
        return bool(self.score < self.threshold)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return {
            "layers": self.layers,
            "correlations": self.correlations,
            "final": self.final,
            "score": self.score,
            "threshold": self.threshold,
            "passed": self.passed,
        }


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over the batch of the Spearman correlation of ``|a_i|`` and ``|b_i|`` (flattened)."""
    from scipy.stats import spearmanr

    values = []
    for x, y in zip(a.flatten(1).abs().numpy(), b.flatten(1).abs().numpy()):
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            values.append(0.0)  # a constant map ranks nothing
            continue
        values.append(float(spearmanr(x, y).statistic))
    return float(np.mean(values))


def parameter_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules with parameters of their own, output end first (reverse registration order)."""
    found = [(n, m) for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]
    return found[::-1]


def cascading_randomization(
    model: nn.Module,
    inputs: torch.Tensor,
    method: Callable[..., Attribution],
    *,
    seed: int = 0,
    threshold: float = THRESHOLD,
) -> SanityResult:
    """Run the cascade for ``method(model, inputs, target)`` on a copy of ``model`` (see the module docstring).

    The explained classes stay those the trained model predicts.
    """
    original = method(model, inputs)
    target = original.target
    randomized = copy.deepcopy(model).eval()
    generator = torch.Generator().manual_seed(seed)
    names, correlations = [], []
    for name, module in parameter_layers(randomized):
        with torch.no_grad():
            for p in module.parameters(recurse=False):
                std = float(p.std()) if p.numel() > 1 else 0.0
                p.copy_(torch.randn(p.shape, generator=generator) * max(std, 0.05))
        maps = method(randomized, inputs, target)
        names.append(name)
        correlations.append(spearman(original.attributions, maps.attributions))
    return SanityResult(names, correlations, threshold)


__all__ = ["SanityResult", "cascading_randomization", "parameter_layers", "spearman"]
