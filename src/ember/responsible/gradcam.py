"""Grad-CAM (Selvaraju et al. 2017): where a CNN's last convolution saw the evidence for a class.

The map is ``ReLU(Σ_c w_c A_c)`` with ``A`` the layer's activations and ``w_c`` the mean gradient of
the class score over each channel, upsampled (bilinear) to the input's height and width.

Example:
    >>> import torch
    >>> from ember.models import create
    >>> model = create("cnn_tiny", in_channels=1, image_size=8).eval()
    >>> grad_cam(model, torch.rand(2, 1, 8, 8)).attributions.shape
    torch.Size([2, 1, 8, 8])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ember.responsible.attribution import MAX_BATCH, Attribution, _chunks, _pick, _targets


def last_conv(model: nn.Module) -> nn.Module | None:
    """The last ``nn.Conv2d`` registered in ``model`` (None when it has none)."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1] if convs else None


def grad_cam(
    model: nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor | int | None = None,
    *,
    layer: nn.Module | None = None,
    max_batch: int = MAX_BATCH,
) -> Attribution:
    """``(B, C, H, W)`` images -> ``(B, 1, H, W)`` Grad-CAM maps of ``layer`` (default :func:`last_conv`).

    Raises:
        ValueError: the model has no convolution (Grad-CAM is for CNNs; use integrated gradients).
    """
    layer = layer or last_conv(model)
    if layer is None or inputs.dim() != 4:
        raise ValueError(
            "Grad-CAM needs a CNN on (B, C, H, W) images; this model has no Conv2d. Use integrated gradients"
        )
    target = _targets(model, inputs, target)
    maps = torch.zeros(len(inputs), 1, *inputs.shape[2:])
    kept: dict[str, torch.Tensor] = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: kept.__setitem__("a", out))
    try:
        for rows in _chunks(len(inputs), max_batch):
            score = _pick(model(inputs[rows]), target[rows])
            acts = kept["a"]  # (b, K, h, w)
            (grad,) = torch.autograd.grad(score.sum(), acts)
            weights = grad.mean(dim=(2, 3), keepdim=True)
            cam = F.relu((weights * acts).sum(1, keepdim=True))
            maps[rows] = F.interpolate(
                cam, size=inputs.shape[2:], mode="bilinear", align_corners=False
            ).detach()
    finally:
        handle.remove()
    return Attribution(maps, target)


__all__ = ["grad_cam", "last_conv"]
