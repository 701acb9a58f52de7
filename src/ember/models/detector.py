"""CenterNet: anchor-free detection as keypoint estimation (Zhou et al., "Objects as Points", 2019).

Every object is the peak of a per-class heatmap at its box centre, at stride 4; two more heads read
the box's width and height (in input pixels) and the centre's sub-cell offset at that peak. No
anchors and no NMS: `decode` keeps the local maxima of the heatmap (a 3x3 max-pool) and reads the
boxes off the other heads there.

The backbone is small and made of ``ember.nn`` blocks: a stride-2 stem, residual stages at strides
2, 4 and 8, and one top-down step that adds the stride-8 features (upsampled) to the stride-4 ones,
so the heads see both the fine grid and a receptive field that covers a whole digit.

Outputs are a dict: ``heatmap`` ``(B, K, H/4, W/4)`` logits, ``size`` ``(B, 2, H/4, W/4)`` (w, h
in input pixels) and ``offset`` ``(B, 2, H/4, W/4)`` (x, y in cells). `ember.tasks.detection` trains
them (focal loss + L1) and scores them (COCO mAP).

Example:
    >>> import torch
    >>> from ember.models import create
    >>> model = create("centernet_tiny", in_channels=1, num_classes=10)
    >>> out = model(torch.randn(2, 1, 64, 64))
    >>> out["heatmap"].shape, out["size"].shape
    (torch.Size([2, 10, 16, 16]), torch.Size([2, 2, 16, 16]))
    >>> len(decode(out, k=5)), decode(out, k=5)[0]["boxes"].shape
    (2, torch.Size([5, 4]))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ember.models._zoo import register_family, register_variant
from ember.nn import ConvBlock, ResidualBlock

__all__ = ["CenterNet", "CenterNetConfig", "decode"]

STRIDE = 4


@dataclass(frozen=True)
class CenterNetConfig:
    """Shape of a ``CenterNet``."""

    in_channels: int = 1
    """Input channels C."""
    num_classes: int = 10
    """Object classes K (heatmap channels)."""
    image_size: int = 64
    """Input side (unused: the model is fully convolutional; kept so every vision builder agrees)."""
    width: int = 32
    """Channels at stride 4; the stem and stride-2 stage have half, the stride-8 stage twice."""
    depths: tuple[int, int, int] = (1, 2, 2)
    """Residual blocks at strides 2, 4 and 8."""
    head_width: int = 64
    """Hidden channels of each head's 3x3 conv."""
    norm: str = "batch"
    """Norm after each backbone conv, a ``make_norm`` name."""
    act: str = "relu"
    """Activation, a ``get_activation`` name."""
    prior: float = 0.1
    """Initial heatmap probability everywhere (the heatmap bias starts at its logit)."""
    channels_last: bool = False
    """Keep weights channels-last (NHWC): several times faster convs on CPU for these small widths."""

    def __post_init__(self) -> None:
        if len(self.depths) != 3:
            raise ValueError(f"depths must give 3 stage depths (strides 2, 4, 8); got {list(self.depths)}")


def _stage(in_ch: int, out_ch: int, depth: int, stride: int, norm: str, act: str) -> nn.Sequential:
    blocks = [
        ResidualBlock(in_ch if i == 0 else out_ch, out_ch, stride if i == 0 else 1, norm=norm, act=act)
        for i in range(max(1, depth))
    ]
    return nn.Sequential(*blocks)


def _head(in_ch: int, hidden: int, out_ch: int, act: str) -> nn.Sequential:
    return nn.Sequential(ConvBlock(in_ch, hidden, 3, norm="none", act=act), nn.Conv2d(hidden, out_ch, 1))


class CenterNet(nn.Module):
    """Stride-4 CenterNet: backbone → heatmap / size / offset heads (see the module docstring).

    Args:
        config: the shape; see ``CenterNetConfig``.

    Example:
        >>> model = CenterNet(CenterNetConfig(width=8, depths=(1, 1, 1), head_width=8))
        >>> model(torch.randn(1, 1, 32, 32))["offset"].shape
        torch.Size([1, 2, 8, 8])
    """

    stride = STRIDE

    def __init__(self, config: CenterNetConfig) -> None:
        super().__init__()
        self.config = c = config
        half, w = max(1, c.width // 2), c.width
        self.stem = ConvBlock(c.in_channels, half, 3, 2, norm=c.norm, act=c.act)  # stride 2
        self.stage2 = _stage(half, half, c.depths[0], 1, c.norm, c.act)
        self.stage4 = _stage(half, w, c.depths[1], 2, c.norm, c.act)
        self.stage8 = _stage(w, 2 * w, c.depths[2], 2, c.norm, c.act)
        self.lateral = ConvBlock(2 * w, w, 1, norm=c.norm, act="identity")
        self.fuse = ConvBlock(w, w, 3, norm=c.norm, act=c.act)
        self.num_features = w
        self.heatmap = _head(w, c.head_width, c.num_classes, c.act)
        self.size = _head(w, c.head_width, 2, c.act)
        self.offset = _head(w, c.head_width, 2, c.act)
        last = self.heatmap[-1]
        assert isinstance(last, nn.Conv2d) and last.bias is not None
        nn.init.constant_(last.bias, -math.log((1 - c.prior) / c.prior))
        if c.channels_last:
            self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B, F, H/4, W/4)
        s4 = self.stage4(self.stage2(self.stem(x)))
        s8 = self.stage8(s4)
        top = F.interpolate(self.lateral(s8), size=s4.shape[-2:], mode="nearest")
        return self.fuse(s4 + top)

    def forward_head(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        # (B, F, h, w) -> heatmap (B, K, h, w), size (B, 2, h, w), offset (B, 2, h, w)
        return {"heatmap": self.heatmap(feats), "size": self.size(feats), "offset": self.offset(feats)}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_head(self.forward_features(x))


@torch.no_grad()
def decode(
    outputs: dict[str, torch.Tensor], k: int = 100, *, stride: int = STRIDE, min_score: float = 0.0
) -> list[dict[str, torch.Tensor]]:
    """Detections from CenterNet outputs: the top ``k`` heatmap peaks of each image.

    A peak is a cell that equals the maximum of its 3x3 neighbourhood (CenterNet's NMS); its box
    is centred at ``(cell + offset) * stride`` with the predicted width and height.

    Args:
        outputs: ``heatmap`` (B, K, h, w) logits, ``size`` and ``offset`` (B, 2, h, w).
        k: detections kept per image (COCO evaluates at most 100).
        stride: input pixels per heatmap cell.
        min_score: drop detections scoring below this (after the top-k).

    Returns:
        One dict per image: ``boxes`` float32 (n, 4) ``xyxy`` in input pixels, ``scores`` (n,) in
        (0, 1), ``labels`` int64 (n,), sorted by descending score.
    """
    heat = outputs["heatmap"].float().sigmoid()
    b, classes, h, w = heat.shape
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
    scores, index = peaks.flatten(1).topk(min(k, classes * h * w), dim=1)  # (B, k)
    labels, cell = index // (h * w), index % (h * w)
    ys, xs = (cell // w).float(), (cell % w).float()
    at = cell[:, None, :].expand(-1, 2, -1)  # (B, 2, k)
    offset = outputs["offset"].float().flatten(2).gather(2, at)
    size = outputs["size"].float().flatten(2).gather(2, at).clamp(min=0)
    cx, cy = (xs + offset[:, 0]) * stride, (ys + offset[:, 1]) * stride
    half_w, half_h = size[:, 0] / 2, size[:, 1] / 2
    boxes = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=2)  # (B, k, 4)
    out = []
    for i in range(b):
        keep = scores[i] >= min_score
        out.append({"boxes": boxes[i][keep], "scores": scores[i][keep], "labels": labels[i][keep]})
    return out


register_family(CenterNetConfig, CenterNet)
register_variant("centernet", CenterNetConfig, "CenterNet with 16/32/64 channels at strides 2/4/8")
register_variant(
    "centernet_tiny",
    CenterNetConfig,
    "A CenterNet of 4/8/16 channels, for tests and CI",
    width=8,
    depths=(1, 1, 1),
    head_width=8,
)
