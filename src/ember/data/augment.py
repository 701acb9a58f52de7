"""Batched, seeded image augmentation on ``(B, C, H, W)`` tensors.

Every transform is ``transform(x, y, generator) -> (x, y)``, vectorized over the batch (no Python
loop over samples), and never writes into its input. Random numbers are drawn on the CPU from
``generator`` and then moved to ``x``'s device, so a batch is augmented identically on CPU and GPU
and a resumed run repeats it exactly (`ember.data.loader` seeds one generator per batch).

`Mixup` and `CutMix` turn int labels ``(B,)`` into soft targets ``(B, K)`` float, which
``F.cross_entropy`` accepts as class probabilities.

Example:
    >>> import torch
    >>> augment = build_augment(["crop", "cutout"], num_classes=10, image_size=32)
    >>> x, y = augment(torch.rand(4, 3, 32, 32), torch.arange(4), torch.Generator().manual_seed(0))
    >>> tuple(x.shape)
    (4, 3, 32, 32)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ember._registry import UnknownNameError, did_you_mean

__all__ = ["AUGMENTS", "Compose", "CutMix", "Cutout", "Mixup", "RandomCrop", "RandomFlip", "build_augment"]

Batch = tuple[torch.Tensor, torch.Tensor]


def _check(x: torch.Tensor, name: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} needs images (B, C, H, W); got shape {tuple(x.shape)}")


def _beta(alpha: float, generator: torch.Generator) -> float:
    """One draw of Beta(alpha, alpha) from ``generator`` (torch's Beta cannot take a generator)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def _soft(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Int labels ``(B,)`` → one-hot ``(B, K)`` float; soft targets pass through (composable mixes)."""
    return y.float() if y.ndim == 2 else F.one_hot(y.long(), num_classes).float()


class RandomCrop:
    """Zero-pad by ``padding`` on each side, then cut an ``H x W`` window at a random offset per sample.

    The output is the input shifted by up to ``padding`` pixels each way, with zeros shifted in.
    """

    def __init__(self, padding: int = 4) -> None:
        self.padding = padding

    def __call__(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> Batch:
        _check(x, "RandomCrop")
        batch, _, height, width = x.shape
        p = self.padding
        padded = F.pad(x, (p, p, p, p))  # (B, C, H + 2p, W + 2p)
        top = torch.randint(0, 2 * p + 1, (batch,), generator=generator).to(x.device)
        left = torch.randint(0, 2 * p + 1, (batch,), generator=generator).to(x.device)
        rows = (top[:, None] + torch.arange(height, device=x.device))[:, :, None]  # (B, H, 1)
        cols = (left[:, None] + torch.arange(width, device=x.device))[:, None, :]  # (B, 1, W)
        samples = torch.arange(batch, device=x.device)[:, None, None]  # (B, 1, 1)
        # advanced indices around a slice put their broadcast dims first: (B, H, W, C)
        out = padded[samples, :, rows, cols]
        return out.permute(0, 3, 1, 2).contiguous(), y


class RandomFlip:
    """Mirror left-right with probability ``p`` per sample.

    Wrong for digits and text (a mirrored 2 is no digit): leave it out of digit recipes.
    """

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> Batch:
        _check(x, "RandomFlip")
        flip = (torch.rand(x.shape[0], generator=generator) < self.p).to(x.device)
        return torch.where(flip[:, None, None, None], x.flip(-1), x), y


class Cutout:
    """Zero a ``size x size`` square centred at a random pixel per sample (clipped at the border)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> Batch:
        _check(x, "Cutout")
        batch, _, height, width = x.shape
        top = torch.randint(0, height, (batch,), generator=generator).to(x.device) - self.size // 2
        left = torch.randint(0, width, (batch,), generator=generator).to(x.device) - self.size // 2
        inside = _box_mask(top, left, self.size, self.size, height, width)  # (B, H, W)
        return x.masked_fill(inside[:, None], 0.0), y


def _box_mask(top: torch.Tensor, left: torch.Tensor, h: int, w: int, height: int, width: int) -> torch.Tensor:
    rows = torch.arange(height, device=top.device)
    cols = torch.arange(width, device=top.device)
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + h)  # (B, H)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + w)  # (B, W)
    return in_rows[:, :, None] & in_cols[:, None, :]


class Mixup:
    """Blend each sample with another of the batch: ``lam * a + (1 - lam) * b``, lam ~ Beta(alpha, alpha).

    One lam per batch (as in Zhang et al. 2018); targets become the same blend of one-hot labels.
    """

    def __init__(self, alpha: float = 0.2, num_classes: int = 10) -> None:
        self.alpha, self.num_classes = alpha, num_classes

    def __call__(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> Batch:
        lam = _beta(self.alpha, generator)
        partner = torch.randperm(x.shape[0], generator=generator).to(x.device)
        soft = _soft(y, self.num_classes)
        return lam * x + (1 - lam) * x[partner], lam * soft + (1 - lam) * soft[partner]


class CutMix:
    """Paste a random box from another sample of the batch (Yun et al. 2019); targets mix by area.

    The box covers ``1 - lam`` of the image, lam ~ Beta(alpha, alpha), one box per batch, clipped
    at the border; the target weight is the area actually pasted.
    """

    def __init__(self, alpha: float = 1.0, num_classes: int = 10) -> None:
        self.alpha, self.num_classes = alpha, num_classes

    def __call__(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> Batch:
        _check(x, "CutMix")
        batch, _, height, width = x.shape
        lam = _beta(self.alpha, generator)
        partner = torch.randperm(batch, generator=generator).to(x.device)
        box_h, box_w = int(height * (1 - lam) ** 0.5), int(width * (1 - lam) ** 0.5)
        centre_y = int(torch.randint(0, height, (1,), generator=generator))
        centre_x = int(torch.randint(0, width, (1,), generator=generator))
        top, left = max(centre_y - box_h // 2, 0), max(centre_x - box_w // 2, 0)
        bottom, right = min(centre_y - box_h // 2 + box_h, height), min(centre_x - box_w // 2 + box_w, width)
        mixed = x.clone()  # never write into the input: it may be a view of the data set
        mixed[:, :, top:bottom, left:right] = x[partner, :, top:bottom, left:right]
        pasted = (bottom - top) * (right - left) / (height * width)
        soft = _soft(y, self.num_classes)
        return mixed, (1 - pasted) * soft + pasted * soft[partner]


class Compose:
    """Apply transforms in order, all drawing from the one generator of the batch."""

    def __init__(
        self, transforms: Sequence[Callable[[torch.Tensor, torch.Tensor, torch.Generator], Batch]]
    ) -> None:
        self.transforms = list(transforms)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> Batch:
        for transform in self.transforms:
            x, y = transform(x, y, generator)
        return x, y


AUGMENTS = ("crop", "flip", "cutout", "mixup", "cutmix")


def build_augment(names: Sequence[str], *, num_classes: int | None, image_size: int) -> Compose | None:
    """The augmentation for a recipe's list of names, applied in the order given.

    ``"crop"``: `RandomCrop` with padding ``image_size // 8`` (4 at 32 px, 1 at 8 px);
    ``"flip"``: `RandomFlip` (never for digits); ``"cutout"``: `Cutout` of half the image side;
    ``"mixup"``: `Mixup` alpha 0.2; ``"cutmix"``: `CutMix` alpha 1.0 (both need ``num_classes``).

    Args:
        names: augmentation names; empty gives None.
        num_classes: classes, for the soft targets of mixup / cutmix.
        image_size: the (square) image side, to size crop padding and cutout.

    Returns:
        A `Compose`, or None when ``names`` is empty.

    Example:
        >>> build_augment([], num_classes=10, image_size=8) is None
        True
    """
    transforms: list[Callable[[torch.Tensor, torch.Tensor, torch.Generator], Batch]] = []
    for name in names:
        if name not in AUGMENTS:
            raise UnknownNameError(
                f"unknown augmentation '{name}'{did_you_mean(name, list(AUGMENTS))} Choose from: {', '.join(AUGMENTS)}."
            )
        if name in ("mixup", "cutmix") and not num_classes:
            raise ValueError(f"augmentation '{name}' makes soft class targets and needs num_classes")
        if name == "crop":
            transforms.append(RandomCrop(padding=max(1, image_size // 8)))
        elif name == "flip":
            transforms.append(RandomFlip())
        elif name == "cutout":
            transforms.append(Cutout(size=max(1, image_size // 2)))
        elif name == "mixup":
            transforms.append(Mixup(alpha=0.2, num_classes=num_classes or 0))
        else:
            transforms.append(CutMix(alpha=1.0, num_classes=num_classes or 0))
    return Compose(transforms) if transforms else None
