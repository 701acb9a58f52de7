"""What the image-generating tasks (autoencoder, gan, diffusion) share: the sampling contract and
the conversions between data space and model space.

A generative task has, besides the loop's members (`ember.tasks.base`):

- ``sample(model, n, *, labels=None, prompt=None, generator=None, **options) -> Tensor``: ``n``
  images, (n, C, H, W) float in [0, 1], reproducible under ``generator``. ``labels`` ((n,) class
  ids) and ``prompt`` (a phrase, or one per image) condition a model that takes them; ``options``
  are the family's sampler knobs (a diffusion model's ``sampler``, ``steps``, ``guidance`` ...).
- ``sample_classes(model) -> int``: how many classes ``labels`` may name (0: the model takes none).

Stages (``ember generate``, ``ember score``, serving, reports) ask for these members, never for a
family's name. `ImageGeneration` gives these tasks the lifecycle's answers they share
(`ember.tasks.contract`): no ``/v1/predict`` (images come from ``/v1/generate``), no export of the
sampling loop, the input checks that apply to their training images.

Example:
    >>> import torch
    >>> to_model_space(torch.tensor([0.0, 0.5, 1.0])).tolist(), to_images(torch.tensor([-2.0, 0.0])).tolist()
    ([-1.0, 0.0, 1.0], [0.0, 0.5])
    >>> balanced_labels(5, 3).tolist()
    [0, 1, 2, 0, 1]
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from ember.tasks.spec import ModelSpec, NotApplicable

__all__ = ["Generative", "ImageGeneration", "balanced_labels", "image_shape", "to_images", "to_model_space"]

SCORE = "score its samples instead: ember score RUN (Fréchet distance, precision/recall, class accuracy)"


@runtime_checkable
class Generative(Protocol):
    """A task that can sample images from its model (see the module docstring)."""

    def sample(
        self,
        model: Any,
        n: int,
        *,
        labels: torch.Tensor | None = None,
        prompt: str | list[str] | None = None,
        generator: torch.Generator | None = None,
        **options: Any,
    ) -> torch.Tensor: ...

    def sample_classes(self, model: Any) -> int: ...


class ImageGeneration:
    """The lifecycle answers every image-generating task shares (see `ember.tasks.contract`)."""

    checks: ClassVar[tuple[str, ...]] = ("overfitting", "leakage", "shift")
    """The loss on training against validation images, and the training images themselves."""
    instead: ClassVar[dict[str, str]] = {
        "eval": "the loss measures the fit; ember score RUN measures the samples (Fréchet distance, "
        "precision/recall, class accuracy)",
        "check.imbalance": "a generative model has no predicted classes to be imbalanced; " + SCORE,
        "distillation": "distilling a sampler is not built in; compress it with int8 or prune instead",
    }

    def decode(self, outputs: Any, spec: ModelSpec) -> dict[str, Any]:
        raise NotApplicable(
            f"task '{spec.task}' makes images and answers no /v1/predict: POST /v1/generate "
            '{"n": 4} for PNG images (or ember generate RUN -o samples.png)'
        )

    profile_inputs: ClassVar[bool] = False
    """A server of a generative model takes requests for images, not images: no drift profile."""

    def export_module(self, model: nn.Module, spec: ModelSpec) -> nn.Module:
        """The one network call a sampler repeats (a generator, a decoder, a denoiser): what a
        bundle verifies and ONNX export traces; sampling itself loops in PyTorch (/v1/generate)."""
        return self.network(model)  # type: ignore[attr-defined]

    def example_inputs(self, spec: ModelSpec, n: int, *, seed: int = 0) -> tuple[torch.Tensor, ...]:
        """Valid inputs of `export_module`'s network for ``n`` examples."""
        generator = torch.Generator().manual_seed(seed)
        return tuple(self.network_inputs(spec, n, generator))  # type: ignore[attr-defined]


class LatentImages(nn.Module):
    """(B, Z) codes → (B, C, H, W) images in [0, 1] through ``decode`` (a generator, a VAE's decoder)."""

    def __init__(self, decode: nn.Module | Any, to_unit: Any) -> None:
        super().__init__()
        self.decode, self.to_unit = decode, to_unit

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.to_unit(self.decode(z))


def spec_option(spec: ModelSpec, name: str) -> Any:
    """Option ``name`` of the spec's zoo model: as recorded, or its variant's default."""
    import inspect

    if name in spec.kwargs:
        return spec.kwargs[name]
    if spec.model is None:
        raise NotApplicable(f"a user's model ({spec.entry_point}) records no '{name}'; pass it in its kwargs")
    from ember import models

    return inspect.signature(models.registry.get(spec.model)).parameters[name].default


def to_model_space(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] → [-1, 1], where GANs and diffusion models work."""
    return images * 2 - 1


def to_images(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] → float32 images in [0, 1] (clamped)."""
    return ((x.float() + 1) / 2).clamp(0, 1)


def balanced_labels(n: int, num_classes: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(n,) class ids cycling through ``0 .. num_classes - 1``: equal counts when n divides."""
    return torch.arange(n, device=device) % num_classes


def image_shape(model: Any) -> tuple[int, int, int]:
    """(C, H, W) of the images a zoo generative model makes (from its config)."""
    config = model.config
    return (int(config.in_channels), int(config.image_size), int(config.image_size))


def device_of(model: Any) -> torch.device:
    """The device of the model's first parameter (the CPU for a model without any)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def check_labels(labels: torch.Tensor | None, n: int, classes: int) -> None:
    """``labels`` must be (n,) ids below ``classes``, and only given to a model that takes them."""
    if labels is None:
        return
    if classes == 0:
        raise ValueError("this model is not class-conditional: it takes no labels (drop --class)")
    if labels.shape != (n,):
        raise ValueError(f"labels must be one class id per image, shape ({n},); got {tuple(labels.shape)}")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        raise ValueError(f"class ids must be in 0..{classes - 1}; got {labels.unique().tolist()}")
