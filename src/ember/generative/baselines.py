"""Baselines for generated images, scored on the same scale as a model's samples.

- `gaussian_mixture`: one full-covariance Gaussian per class over the raw pixels, fitted in closed
  form to the training images (mean and covariance of each class, weights its frequency); samples
  are clipped to [0, 1]. A mixture that knows the labels: the strongest of the simple density
  models, and one whose samples can be asked for a class.
- `uniform_noise`: pixels uniform in [0, 1].

Example:
    >>> import torch
    >>> mixture = GaussianMixture.fit(torch.rand(40, 1, 4, 4), torch.arange(40) % 2)
    >>> mixture.sample(6, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([6, 1, 4, 4])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["GaussianMixture", "uniform_noise"]


@dataclass
class GaussianMixture:
    """A mixture of one Gaussian per class over flattened images."""

    means: torch.Tensor
    """(K, D) component means."""
    scales: torch.Tensor
    """(K, D, D) lower Cholesky factors of the (regularized) covariances."""
    weights: torch.Tensor
    """(K,) component weights (class frequencies)."""
    shape: tuple[int, ...]
    """(C, H, W) of an image."""

    @staticmethod
    def fit(images: torch.Tensor, labels: torch.Tensor, *, reg: float = 1e-3) -> GaussianMixture:
        """Fit to (N, C, H, W) ``images`` with (N,) ``labels``; ``reg`` is added to each covariance's
        diagonal (pixels that never vary, e.g. MNIST's borders, would make it singular)."""
        x = images.flatten(1).double()
        classes = labels.unique()
        means, scales, counts = [], [], []
        for k in classes:
            xk = x[labels == k]
            mean = xk.mean(0)
            centered = xk - mean
            cov = centered.T @ centered / max(len(xk) - 1, 1) + reg * torch.eye(x.shape[1], dtype=x.dtype)
            means.append(mean)
            scales.append(torch.linalg.cholesky(cov))
            counts.append(len(xk))
        weights = torch.tensor(counts, dtype=torch.float64) / len(x)
        return GaussianMixture(torch.stack(means), torch.stack(scales), weights, tuple(images.shape[1:]))

    def sample(
        self, n: int, *, labels: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``n`` images (n, C, H, W) in [0, 1]; components drawn by weight, or given as ``labels``."""
        if labels is None:
            labels = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        x = torch.empty_like(z)
        for k in labels.unique().tolist():  # one component at a time: its (D, D) factor, not N copies
            rows = labels == k
            x[rows] = self.means[k] + z[rows] @ self.scales[k].T
        return x.clamp(0, 1).float().view(n, *self.shape)


def uniform_noise(
    n: int, shape: tuple[int, ...], *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``n`` images of pixels uniform in [0, 1]."""
    return torch.rand(n, *shape, generator=generator)
