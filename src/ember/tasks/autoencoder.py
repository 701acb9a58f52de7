"""Autoencoding: reconstruction for a plain autoencoder, the evidence lower bound for a VAE.

Pixels are Bernoulli variables: a VAE reads and reconstructs *binarized* images — each grey level
is the probability of a 1 (dynamic binarization, drawn afresh each training step; validation and
test draw it from a fixed seed, so their numbers repeat) — which makes its bound a bound on the
log-likelihood of binary images, in nats (Larochelle & Murray's binarized MNIST convention). A
plain autoencoder reconstructs the grey levels themselves (cross-entropy with soft targets).

Metrics (per image, averaged): ``loss`` (the objective: reconstruction + β · KL), ``recon``
(−E_q log p(x | z)), ``kl`` (KL(q(z | x) || N(0, I))), ``nelbo`` (recon + KL: −ELBO in nats) and
``bits_per_dim`` (``nelbo / (D ln 2)``, D pixels). On the test split a VAE also gets the
importance-weighted bound of Burda et al. (2016) with ``iwae_samples`` (k) samples: ``nll_iwae`` =
−log (1/k) Σ p(x, z_k) / q(z_k | x), in nats, and ``bits_per_dim_iwae``; it is at most ``nelbo``
in expectation, tighter as k grows.

Example:
    >>> import torch
    >>> from ember.models import create
    >>> _ = torch.manual_seed(0)  # one estimate of each bound: unseeded, about 1 draw in 6 has them crossed
    >>> task, vae = AutoEncoding(iwae_samples=8).for_test(), create("vae_tiny", image_size=8).eval()
    >>> output, target = task.forward(vae, (torch.rand(4, 1, 8, 8), torch.zeros(4)))
    >>> ev = task.evaluation(); ev.update(output, target, task.loss(output, target))
    >>> metrics = ev.compute()
    >>> metrics["nll_iwae"] <= metrics["nelbo"]
    True
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ember.tasks.base import registry, split_batch
from ember.tasks.generative import ImageGeneration, LatentImages, check_labels, device_of, spec_option
from ember.tasks.spec import ModelSpec

EVAL_SEED = 0  # the binarization of validation and test images


class AutoEncoding(ImageGeneration):
    """Reconstruction (autoencoder) or the negative ELBO with weight ``beta`` on the KL (β-VAE).

    Args:
        beta: weight of the KL term (1: the ELBO; > 1: a β-VAE's more disentangled code).
        iwae_samples: samples k of the importance-weighted bound on the test split (0: none).
    """

    headline = "loss"
    mode: Literal["max", "min"] = "min"

    def __init__(self, *, beta: float = 1.0, iwae_samples: int = 100, _test: bool = False) -> None:
        if beta < 0:
            raise ValueError(f"beta must be >= 0; got {beta}")
        self.beta = beta
        self.iwae_samples = iwae_samples
        self.testing = _test

    def for_test(self) -> AutoEncoding:
        """The task as it scores the test split: with the importance-weighted bound."""
        return AutoEncoding(beta=self.beta, iwae_samples=self.iwae_samples, _test=True)

    def forward(self, model: Any, batch: Any) -> tuple[Any, torch.Tensor]:
        images, _ = split_batch(batch)
        x = binarize(images, train=model.training) if model.variational else images
        out = model(x)
        output: dict[str, Any] = {"logits": out.logits, "mean": out.mean, "logvar": out.logvar}
        if self.testing and self.iwae_samples and out.logvar is not None:
            output["log_px"] = importance_weighted_bound(model, x, self.iwae_samples)
        return output, x

    def loss(self, output: Any, target: torch.Tensor) -> torch.Tensor:
        recon, kl = terms(output, target)
        return (recon + self.beta * kl).mean() if kl is not None else recon.mean()

    def evaluation(self) -> AutoEncodingEvaluation:
        return AutoEncodingEvaluation(self.beta)

    # ------------------------------------------------------------------ generation

    def network(self, model: Any) -> nn.Module:
        """The decoder: (B, Z) codes → images in [0, 1]."""
        return LatentImages(model.decode, torch.sigmoid)

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
        """``n`` images decoded from z ~ N(0, I): the Bernoulli means, (n, C, H, W) in [0, 1]."""
        if not model.variational:
            raise ValueError(
                "a plain autoencoder has no prior to sample from; train a VAE (model.name: vae) to sample, "
                "or use --interpolate"
            )
        check_labels(labels, n, 0)
        if prompt is not None:
            raise ValueError("this model takes no prompt (it is not text-conditioned)")
        z = torch.randn(n, model.latent_dim, generator=generator, device=device_of(model))
        return self.decode_codes(model, z)

    @torch.no_grad()  # (not inference_mode: the images may go on into autograd-tracked code)
    def decode_codes(self, model: Any, z: torch.Tensor) -> torch.Tensor:
        """(B, Z) codes → (B, C, H, W) images in [0, 1] (sigmoid of the logits), in eval mode."""
        was_training = model.training
        model.eval()
        images = torch.sigmoid(model.decode(z).float())
        model.train(was_training)
        return images

    @torch.no_grad()  # (not inference_mode: the images may go on into autograd-tracked code)
    def reconstruct(self, model: Any, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images in [0, 1] → their reconstructions from the code (a VAE: its mean)."""
        was_training = model.training
        model.eval()
        code, _ = model.encode(images)
        model.train(was_training)
        return self.decode_codes(model, code)

    @torch.no_grad()  # (not inference_mode: the images may go on into autograd-tracked code)
    def interpolate(self, model: Any, a: torch.Tensor, b: torch.Tensor, steps: int = 8) -> torch.Tensor:
        """Images along the straight line between the codes of images ``a`` and ``b`` ((B, C, H, W)
        each): (B * steps, C, H, W), each row going from a's reconstruction to b's."""
        was_training = model.training
        model.eval()
        za, _ = model.encode(a)
        zb, _ = model.encode(b)
        model.train(was_training)
        w = torch.linspace(0, 1, steps, device=za.device)[None, :, None]  # (1, S, 1)
        z = za[:, None] * (1 - w) + zb[:, None] * w  # (B, S, Z)
        return self.decode_codes(model, z.flatten(0, 1))


def binarize(images: torch.Tensor, *, train: bool) -> torch.Tensor:
    """Each pixel 1 with probability its grey level: fresh draws in training, a fixed seed otherwise."""
    if train:
        return torch.bernoulli(images)
    generator = torch.Generator().manual_seed(EVAL_SEED)
    u = torch.rand(images.shape, generator=generator).to(images.device)
    return (u < images).to(images.dtype)


def terms(output: dict[str, Any], target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-image reconstruction nats (B,) and, for a VAE, KL nats (B,)."""
    logits = output["logits"].float()
    recon = F.binary_cross_entropy_with_logits(logits, target.float(), reduction="none").flatten(1).sum(1)
    mean, logvar = output["mean"], output["logvar"]
    if logvar is None:
        return recon, None
    mean, logvar = mean.float(), logvar.float()
    kl = 0.5 * (mean.square() + logvar.exp() - 1 - logvar).sum(1)
    return recon, kl


def importance_weighted_bound(model: Any, x: torch.Tensor, k: int, *, chunk: int = 10) -> torch.Tensor:
    """(B,) log p(x) ≥ log (1/k) Σ_i p(x | z_i) p(z_i) / q(z_i | x), z_i ~ q(z | x), in nats.

    The k samples come from a fixed seed (the bound repeats) and are decoded ``chunk`` at a time.
    """
    mean, logvar = model.encode(x)
    mean, logvar = mean.float(), logvar.float()
    std = (0.5 * logvar).exp()
    generator = torch.Generator().manual_seed(EVAL_SEED)
    log_norm = -0.5 * math.log(2 * math.pi)
    weights = []
    for start in range(0, k, chunk):
        eps = torch.randn(min(chunk, k - start), *mean.shape, generator=generator).to(x.device)  # (c, B, Z)
        z = mean + std * eps
        logits = model.decode(z.flatten(0, 1)).float()
        target = x.float().expand(len(eps), *x.shape).flatten(0, 1)
        nats = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).sum(1)
        log_pz = (log_norm - 0.5 * z.square()).sum(-1)
        log_qz = (log_norm - 0.5 * eps.square() - 0.5 * logvar).sum(-1)
        weights.append(-nats.view(len(eps), -1) + log_pz - log_qz)  # (c, B)
    return torch.logsumexp(torch.cat(weights), dim=0) - math.log(k)


class AutoEncodingEvaluation:
    """Sums of per-image nats over a pass (kept on the device until ``compute``)."""

    def __init__(self, beta: float) -> None:
        self.beta = beta
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0
        self.pixels = 1

    def _add(self, name: str, value: torch.Tensor) -> None:
        total = value.detach().float().sum()
        self.sums[name] = self.sums[name] + total if name in self.sums else total

    def update(self, output: Any, target: torch.Tensor, loss: torch.Tensor) -> None:
        recon, kl = terms(output, target)
        self._add("recon", recon)
        if kl is not None:
            self._add("kl", kl)
        if "log_px" in output:
            self._add("nll_iwae", -output["log_px"])
        self.count += target.shape[0]
        self.pixels = target[0].numel()

    def compute(self) -> dict[str, float]:
        if not self.count:
            return {"loss": float("nan")}
        mean = {name: float(total) / self.count for name, total in self.sums.items()}
        if "kl" not in mean:
            return {"loss": mean["recon"], "recon": mean["recon"]}
        nelbo = mean["recon"] + mean["kl"]
        out = {
            "loss": mean["recon"] + self.beta * mean["kl"],
            "recon": mean["recon"],
            "kl": mean["kl"],
            "nelbo": nelbo,
            "bits_per_dim": nelbo / (self.pixels * math.log(2)),
        }
        if "nll_iwae" in mean:
            out["nll_iwae"] = mean["nll_iwae"]
            out["bits_per_dim_iwae"] = mean["nll_iwae"] / (self.pixels * math.log(2))
        return out


@registry.register("autoencoder")
def autoencoder(*, beta: float = 1.0, iwae_samples: int = 100) -> AutoEncoding:
    """Reconstruction or the (β-weighted) ELBO; see :class:`AutoEncoding`."""
    return AutoEncoding(beta=beta, iwae_samples=iwae_samples)


__all__ = ["AutoEncoding", "binarize", "importance_weighted_bound"]
