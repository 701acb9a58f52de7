"""Images out: sample grids and PNG bytes from (N, C, H, W) float tensors in [0, 1].

Example:
    >>> import torch
    >>> grid(torch.zeros(6, 1, 4, 4), nrow=3).shape
    torch.Size([1, 14, 20])
    >>> png_bytes(torch.rand(1, 4, 4))[:4]
    b'\\x89PNG'
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import torch

__all__ = ["grid", "png_bytes", "read_image", "save_grid", "to_pil"]


def grid(
    images: torch.Tensor, *, nrow: int | None = None, padding: int = 2, pad_value: float = 1.0
) -> torch.Tensor:
    """(N, C, H, W) → one (C, H', W') image: ``nrow`` images a row (default: a square), ``padding``
    pixels of ``pad_value`` between and around them."""
    if images.dim() != 4:
        raise ValueError(f"expected (N, C, H, W) images; got shape {tuple(images.shape)}")
    n, c, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    out = torch.full((c, rows * (h + padding) + padding, nrow * (w + padding) + padding), pad_value)
    for i, image in enumerate(images.detach().float().cpu()):
        r, col = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        out[:, top : top + h, left : left + w] = image
    return out


def to_pil(image: torch.Tensor, *, scale: int = 1) -> Any:
    """A (C, H, W) image in [0, 1] as a PIL image (grey for one channel, RGB for three), each pixel
    repeated ``scale`` times each way."""
    from PIL import Image

    array = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    if scale > 1:
        array = array.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    if array.shape[0] == 1:
        return Image.fromarray(array[0].numpy(), mode="L")
    return Image.fromarray(array.permute(1, 2, 0).contiguous().numpy(), mode="RGB")


def png_bytes(image: torch.Tensor, *, scale: int = 1) -> bytes:
    """The PNG file of a (C, H, W) image in [0, 1]."""
    buffer = io.BytesIO()
    to_pil(image, scale=scale).save(buffer, format="PNG")
    return buffer.getvalue()


def save_grid(images: torch.Tensor, path: str | Path, *, nrow: int | None = None, scale: int = 2) -> Path:
    """Write ``images`` as one PNG grid to ``path`` (its folder is created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(grid(images, nrow=nrow), scale=scale))
    return path


def read_image(path: str | Path, *, channels: int, size: int) -> torch.Tensor:
    """A picture file as a (1, channels, size, size) float tensor in [0, 1] (converted and resized)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            picture = opened.convert("L" if channels == 1 else "RGB")
        if picture.size != (size, size):
            picture = picture.resize((size, size), Image.Resampling.BILINEAR)
        data = torch.frombuffer(bytearray(picture.tobytes()), dtype=torch.uint8)
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    except UnidentifiedImageError:
        raise ValueError(f"{path} is not an image PIL can read (PNG, JPEG ...)") from None
    return (data.float() / 255).view(size, size, channels).permute(2, 0, 1).unsqueeze(0)
