"""Adversarial training: a discriminator step, then a generator step, on each batch.

The task runs the optimizer steps itself (``train_step``, see `ember.train.loop`). One optimizer
holds both networks; each step zeroes every gradient, lets the gradient reach only one network's
parameters and steps: an optimizer leaves a parameter without a gradient untouched (its moments
too), so this is exactly one optimizer per network, in one state dict that checkpoints and resumes
as any other. Two learning rates (TTUR, Heusel et al. 2017) come from ``optim.lr_groups``, e.g.
``{discriminator: 4.0e-4}`` beside ``optim.lr: 1.0e-4``.

Losses (``loss``): ``hinge`` (Lim & Ye 2017; Miyato et al. 2018) or ``nonsaturating`` (Goodfellow
et al. 2014: the generator maximizes log D(G(z))). After each generator step the generator's moving
average is updated (`ember.models.gan.DCGAN.update_ema`). The logged training loss is the
discriminator's.

Validation draws latents from a fixed seed and reports ``d_loss``, ``g_loss``, the mean logits on
real and generated images, and ``diversity``: the mean distance between generated images divided
by that between real ones (about 1 for a healthy generator). Below ``collapse_below`` the
evaluation warns of mode collapse. None of these measures sample quality; ``ember score`` does.
The headline, ``d_loss`` (mode ``max``), picks the checkpoint whose discriminator is most fooled:
a weak signal; the final weights are what a run keeps.

Example:
    >>> import torch
    >>> from ember.models import create
    >>> gan, task = create("dcgan_tiny", image_size=8), GAN()
    >>> optimizer = torch.optim.Adam([p for p in gan.parameters() if p.requires_grad])
    >>> loss = task.train_step(gan, (torch.rand(4, 1, 8, 8), torch.zeros(4)), optimizer)
    >>> task.sample(gan, 3, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3, 1, 8, 8])
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ember.tasks.base import registry, split_batch
from ember.tasks.generative import (
    SCORE,
    ImageGeneration,
    LatentImages,
    check_labels,
    device_of,
    spec_option,
    to_images,
    to_model_space,
)
from ember.tasks.spec import ModelSpec

log = logging.getLogger("ember.generative")
LOSSES = ("hinge", "nonsaturating")
EVAL_SEED = 0


class GAN(ImageGeneration):
    """Adversarial training of a model with ``generator``, ``discriminator`` and ``update_ema()``.

    Args:
        loss: ``hinge`` or ``nonsaturating``.
        collapse_below: validation ``diversity`` under which a mode-collapse warning is logged.
    """

    checks: ClassVar[tuple[str, ...]] = ("leakage", "shift")
    """A GAN's losses measure a contest, not a fit: the checks look at its training images only."""
    instead: ClassVar[dict[str, str]] = {
        **ImageGeneration.instead,
        "eval": "its losses measure the generator against the discriminator; ember score RUN measures "
        "the samples (Fréchet distance, precision/recall)",
        "check.overfitting": "a GAN's losses measure the generator against the discriminator, not a fit; "
        + SCORE,
    }

    headline = "d_loss"
    mode: Literal["max", "min"] = "max"

    def __init__(self, *, loss: str = "hinge", collapse_below: float = 0.5) -> None:
        if loss not in LOSSES:
            raise ValueError(f"unknown GAN loss '{loss}'; expected one of {', '.join(LOSSES)}")
        self.loss_name = loss
        self.collapse_below = collapse_below

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """The discriminator's loss from its (B,) logits on real and generated images."""
        if self.loss_name == "hinge":
            return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
        return F.softplus(-real).mean() + F.softplus(fake).mean()

    def g_loss(self, fake: torch.Tensor) -> torch.Tensor:
        """The generator's loss from the discriminator's (B,) logits on its images."""
        return -fake.mean() if self.loss_name == "hinge" else F.softplus(-fake).mean()

    def train_step(
        self,
        model: Any,
        batch: Any,
        optimizer: torch.optim.Optimizer,
        *,
        autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    ) -> torch.Tensor:
        images, _ = split_batch(batch)
        real = to_model_space(images)
        G, D = model.generator, model.discriminator
        z = torch.randn(real.shape[0], model.latent_dim, device=real.device)
        with autocast():
            fake = G(z)
        optimizer.zero_grad(set_to_none=True)  # the discriminator: the generator's graph is cut
        with autocast():
            d_loss = self.d_loss(D(real).float(), D(fake.detach()).float())
        d_loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)  # the generator: gradients reach its parameters only
        with autocast():
            g_loss = self.g_loss(D(fake).float())
        g_loss.backward(inputs=[p for p in G.parameters() if p.requires_grad])
        optimizer.step()
        model.update_ema()
        return d_loss.detach()

    def forward(self, model: Any, batch: Any) -> tuple[Any, torch.Tensor]:
        """Validation: the discriminator on real images and on as many generated ones (fixed latents)."""
        images, _ = split_batch(batch)
        real = to_model_space(images)
        generator = torch.Generator().manual_seed(EVAL_SEED)
        z = torch.randn(real.shape[0], model.latent_dim, generator=generator).to(real.device)
        fake = model(z)
        D = model.discriminator
        return {"real": D(real).float(), "fake": D(fake).float(), "images": fake}, real

    def loss(self, output: Any, target: torch.Tensor) -> torch.Tensor:
        return self.d_loss(output["real"], output["fake"])

    def evaluation(self) -> GANEvaluation:
        return GANEvaluation(self)

    # ------------------------------------------------------------------ generation

    def network(self, model: Any) -> nn.Module:
        """The (averaged) generator: (B, Z) codes → images in [0, 1]."""
        return LatentImages(model, to_images)

    def network_inputs(self, spec: ModelSpec, n: int, generator: torch.Generator) -> tuple[torch.Tensor]:
        return (torch.randn(n, int(spec_option(spec, "latent_dim")), generator=generator),)

    def sample_classes(self, model: Any) -> int:
        return 0

    @torch.no_grad()  # (not inference_mode: the images may go on into autograd-tracked code)
    def sample(
        self,
        model: Any,
        n: int,
        *,
        labels: torch.Tensor | None = None,
        prompt: str | list[str] | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``n`` images from the (averaged) generator, (n, C, H, W) in [0, 1]."""
        check_labels(labels, n, 0)
        if prompt is not None:
            raise ValueError("this model takes no prompt (it is not text-conditioned)")
        z = torch.randn(n, model.latent_dim, generator=generator, device=device_of(model))
        was_training = model.training
        model.eval()
        images = to_images(model(z))
        model.train(was_training)
        return images


def diversity(images: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean distance between distinct images of a (B, ...) batch."""
    flat = images.float().flatten(1)
    dist = torch.cdist(flat, flat)
    n = flat.shape[0]
    return dist.sum() / max(n * (n - 1), 1)


class GANEvaluation:
    """Means over a validation pass; ``diversity`` is the ratio of the generated images' to the real."""

    def __init__(self, task: GAN) -> None:
        self.task = task
        self.sums: dict[str, float] = {}
        self.batches = 0

    def update(self, output: Any, target: torch.Tensor, loss: torch.Tensor) -> None:
        values = {
            "d_loss": loss,
            "g_loss": self.task.g_loss(output["fake"]),
            "d_real": output["real"].mean(),
            "d_fake": output["fake"].mean(),
            "diversity": diversity(output["images"]) / diversity(target).clamp(min=1e-12),
        }
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value)
        self.batches += 1

    def compute(self) -> dict[str, float]:
        if not self.batches:
            return {"d_loss": float("nan")}
        out = {name: total / self.batches for name, total in self.sums.items()}
        if out["diversity"] < self.task.collapse_below:
            log.warning(
                "generated images are %.2f as diverse as real ones (below %.2f): the generator may be "
                "collapsing onto few modes; try the hinge loss, spectral norm or a lower generator lr",
                out["diversity"],
                self.task.collapse_below,
            )
        return out


@registry.register("gan")
def gan(*, loss: str = "hinge", collapse_below: float = 0.5) -> GAN:
    """Adversarial training, discriminator then generator each batch; see :class:`GAN`."""
    return GAN(loss=loss, collapse_below=collapse_below)


__all__ = ["GAN", "diversity"]
