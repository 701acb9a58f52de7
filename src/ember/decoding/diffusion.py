"""Diffusion math: noise schedules, the forward process, DDPM and DDIM steps, classifier-free guidance.

Plain tensor functions, no model: a task supplies ``denoise(x_t, t) -> model output`` and
`sample` runs the reverse process. The conventions are those of Ho et al. (DDPM, 2020) and Song et
al. (DDIM, 2021), written to agree with ``diffusers``' ``DDPMScheduler`` / ``DDIMScheduler`` (the
tests compare them on the same inputs):

- ``alphas_cumprod[t]`` is ᾱ_t, the signal kept after ``t + 1`` noising steps; timesteps run
  ``0 .. T - 1``. ``x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε``.
- A model predicts ``epsilon`` (the noise), ``v_prediction`` (``v = sqrt(ᾱ) ε - sqrt(1 - ᾱ) x_0``,
  Salimans & Ho 2022) or ``sample`` (``x_0`` itself).
- A DDPM step draws from the posterior q(x_{t'} | x_t, x̂_0) with its variance β̃ ("fixed_small");
  a DDIM step with ``eta`` scales that variance by ``eta²`` (``eta = 1`` is the DDPM posterior's
  variance, ``eta = 0`` is deterministic). ``x̂_0`` is clipped to ``[-1, 1]`` when ``clip`` is on
  (the predicted noise is not recomputed, as ``diffusers`` does by default).
- The step after the last timestep uses ᾱ = 1 (``set_alpha_to_one``).

Example:
    >>> import torch
    >>> schedule = NoiseSchedule.linear(1000)
    >>> x = sample(lambda x, t: torch.zeros_like(x), (2, 1, 4, 4), schedule, sampler="ddim", steps=10,
    ...            generator=torch.Generator().manual_seed(0))
    >>> x.shape
    torch.Size([2, 1, 4, 4])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch

Prediction = Literal["epsilon", "v_prediction", "sample"]
PREDICTIONS: tuple[str, ...] = ("epsilon", "v_prediction", "sample")
SAMPLERS: tuple[str, ...] = ("ddpm", "ddim")
SCHEDULES: tuple[str, ...] = ("linear", "cosine")

__all__ = [
    "PREDICTIONS",
    "SAMPLERS",
    "SCHEDULES",
    "NoiseSchedule",
    "add_noise",
    "ddim_step",
    "ddpm_step",
    "guide",
    "predicted_x0_and_noise",
    "sample",
    "timesteps",
    "training_target",
]


@dataclass(frozen=True)
class NoiseSchedule:
    """β_1..β_T of a forward process, and the ᾱ derived from them (float64, on the CPU).

    Example:
        >>> s = NoiseSchedule.linear(10, beta_start=0.1, beta_end=0.1)
        >>> round(float(s.alphas_cumprod[1]), 4)
        0.81
    """

    betas: torch.Tensor
    """(T,) noise added by each step."""
    table: torch.Tensor = field(init=False, repr=False)
    """(T + 1,) ᾱ_0 .. ᾱ_{T-1}, then 1 (index -1: the step after the last)."""

    def __post_init__(self) -> None:
        table = torch.cat(
            [torch.cumprod(1.0 - self.betas.double(), dim=0), torch.ones(1, dtype=torch.float64)]
        )
        object.__setattr__(self, "table", table)

    @property
    def num_steps(self) -> int:
        """T, the training timesteps."""
        return int(self.betas.shape[0])

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """(T,) ᾱ_t: the fraction of the signal's variance left at timestep t."""
        return self.table[:-1]

    @staticmethod
    def linear(num_steps: int = 1000, *, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
        """DDPM's schedule: β rises linearly (``diffusers``' ``linear``, float32 then widened)."""
        betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float32)
        return NoiseSchedule(betas.double())

    @staticmethod
    def cosine(num_steps: int = 1000, *, max_beta: float = 0.999, offset: float = 0.008) -> NoiseSchedule:
        """Nichol & Dhariwal's cosine ᾱ (``diffusers``' ``squaredcos_cap_v2``): β capped at ``max_beta``."""

        def alpha_bar(u: float) -> float:
            return math.cos((u + offset) / (1 + offset) * math.pi / 2) ** 2

        betas = [
            min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), max_beta)
            for i in range(num_steps)
        ]
        return NoiseSchedule(torch.tensor(betas, dtype=torch.float32).double())

    @staticmethod
    def named(name: str, num_steps: int = 1000) -> NoiseSchedule:
        """``linear`` or ``cosine`` with their default parameters."""
        if name not in SCHEDULES:
            raise ValueError(f"unknown noise schedule '{name}'; expected one of {', '.join(SCHEDULES)}")
        return NoiseSchedule.linear(num_steps) if name == "linear" else NoiseSchedule.cosine(num_steps)

    def alpha_bar(self, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """ᾱ at timesteps ``t`` (an int, or (B,) ids; -1 means ᾱ = 1) in float64 on ``like``'s device,
        shaped to broadcast over ``like``. Coefficients are formed in float64 and cast at the end:
        in float32, 1 - ᾱ near t = 0 would keep only a few digits."""
        if isinstance(t, int):
            return self.table[t].to(like.device)
        return self.table.to(like.device)[t].view(-1, *([1] * (like.dim() - 1)))


def _f(coef: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A float64 coefficient in ``like``'s dtype."""
    return coef.to(like.dtype)


def _check(prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction '{prediction}'; expected one of {', '.join(PREDICTIONS)}")


def add_noise(
    schedule: NoiseSchedule, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """``x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε`` for (B,) timesteps ``t``."""
    ab = schedule.alpha_bar(t, x0)
    return _f(ab.sqrt(), x0) * x0 + _f((1 - ab).sqrt(), x0) * noise


def training_target(
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    prediction: Prediction = "epsilon",
) -> torch.Tensor:
    """What a model of ``prediction`` type is trained to output at ``x_t`` (ε, v or x_0)."""
    _check(prediction)
    if prediction == "epsilon":
        return noise
    if prediction == "sample":
        return x0
    ab = schedule.alpha_bar(t, x0)
    return _f(ab.sqrt(), x0) * noise - _f((1 - ab).sqrt(), x0) * x0


def predicted_x0_and_noise(
    schedule: NoiseSchedule,
    output: torch.Tensor,
    t: int,
    x_t: torch.Tensor,
    prediction: Prediction = "epsilon",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x̂_0, ε̂) implied by a model ``output`` of type ``prediction`` at ``x_t``, timestep ``t``."""
    _check(prediction)
    ab = schedule.alpha_bar(t, x_t)
    a, s = _f(ab.sqrt(), x_t), _f((1 - ab).sqrt(), x_t)
    if prediction == "epsilon":
        return (x_t - s * output) / a, output
    if prediction == "sample":
        return output, (x_t - a * output) / s
    return a * x_t - s * output, a * output + s * x_t


def ddpm_step(
    schedule: NoiseSchedule,
    output: torch.Tensor,
    t: int,
    x_t: torch.Tensor,
    *,
    prev_t: int | None = None,
    noise: torch.Tensor | None = None,
    prediction: Prediction = "epsilon",
    clip: bool = True,
) -> torch.Tensor:
    """One ancestral step ``x_t -> x_{prev_t}`` (default ``t - 1``) from the posterior q(x_prev | x_t, x̂_0).

    ``noise`` (shaped like ``x_t``) scales the posterior's standard deviation; it is unused at
    ``t = 0`` and needed otherwise.
    """
    prev_t = t - 1 if prev_t is None else prev_t
    ab_t, ab_prev = schedule.alpha_bar(t, x_t), schedule.alpha_bar(prev_t, x_t)
    beta = 1 - ab_t / ab_prev  # the effective β of a (possibly strided) step
    x0, _ = predicted_x0_and_noise(schedule, output, t, x_t, prediction)
    if clip:
        x0 = x0.clamp(-1, 1)
    coef_x0 = ab_prev.sqrt() * beta / (1 - ab_t)
    coef_xt = (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab_t)
    mean = _f(coef_x0, x_t) * x0 + _f(coef_xt, x_t) * x_t
    if t == 0:
        return mean
    if noise is None:
        raise ValueError("ddpm_step needs noise (shaped like x_t) for t > 0")
    variance = ((1 - ab_prev) / (1 - ab_t) * beta).clamp(min=1e-20)
    return mean + _f(variance.sqrt(), x_t) * noise


def ddim_step(
    schedule: NoiseSchedule,
    output: torch.Tensor,
    t: int,
    prev_t: int,
    x_t: torch.Tensor,
    *,
    eta: float = 0.0,
    noise: torch.Tensor | None = None,
    prediction: Prediction = "epsilon",
    clip: bool = True,
) -> torch.Tensor:
    """One DDIM step ``x_t -> x_{prev_t}`` (``prev_t = -1``: to ᾱ = 1), eq. 12 of Song et al.

    With ``clip``, x̂_0 is clipped to [-1, 1] and the step's noise direction is the one x_t and
    the clipped x̂_0 imply, not the model's ε̂ (``use_clipped_model_output`` in diffusers).

    ``eta`` scales the noise: σ² = eta² (1 - ᾱ_prev) / (1 - ᾱ_t) (1 - ᾱ_t / ᾱ_prev); ``noise`` is
    needed when ``eta > 0``.
    """
    ab_t, ab_prev = schedule.alpha_bar(t, x_t), schedule.alpha_bar(prev_t, x_t)
    x0, eps = predicted_x0_and_noise(schedule, output, t, x_t, prediction)
    if clip:
        x0 = x0.clamp(-1, 1)
        # the noise that x_t and the clipped x̂_0 imply (diffusers' use_clipped_model_output=True):
        # with the model's own ε̂ beside a clipped x̂_0 the step leaves the path x_t is on, which
        # at the first, noisiest steps (x̂_0 = x_t / 0.006 - ..., clipped almost everywhere) turns
        # guided samples into saturated blobs; with it, eta = 1 is exactly the DDPM step
        eps = (x_t - _f(ab_t.sqrt(), x_t) * x0) / _f((1 - ab_t).sqrt(), x_t)
    variance = (1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)
    std = eta * variance.sqrt()
    x_prev = _f(ab_prev.sqrt(), x_t) * x0 + _f((1 - ab_prev - std**2).sqrt(), x_t) * eps
    if eta > 0:
        if noise is None:
            raise ValueError("ddim_step needs noise (shaped like x_t) when eta > 0")
        x_prev = x_prev + _f(std, x_t) * noise
    return x_prev


def timesteps(
    num_train_steps: int, steps: int, spacing: Literal["leading", "trailing"] = "leading"
) -> list[int]:
    """The ``steps`` timesteps a sampler visits, highest first (``diffusers``' ``timestep_spacing``).

    ``leading``: ``0, r, 2r, ...`` with ``r = T // steps`` (the DDIM paper's); ``trailing``: evenly
    back from ``T - 1`` (starts at the noisiest step; better at few steps, Lin et al. 2024).

    Example:
        >>> timesteps(1000, 4), timesteps(1000, 4, "trailing")
        ([750, 500, 250, 0], [999, 749, 499, 249])
    """
    if not 1 <= steps <= num_train_steps:
        raise ValueError(f"steps must be in 1..{num_train_steps} (the training timesteps); got {steps}")
    if spacing == "leading":
        ratio = num_train_steps // steps
        return [i * ratio for i in reversed(range(steps))]
    if spacing == "trailing":
        stride = num_train_steps / steps
        return [round(num_train_steps - i * stride) - 1 for i in range(steps)]
    raise ValueError(f"unknown timestep spacing '{spacing}'; expected leading or trailing")


def guide(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022): ``uncond + scale * (cond - uncond)``."""
    return uncond + scale * (cond - uncond)


def sample(
    denoise: Callable[[torch.Tensor, int], torch.Tensor],
    shape: tuple[int, ...],
    schedule: NoiseSchedule,
    *,
    sampler: Literal["ddpm", "ddim"] = "ddim",
    steps: int | None = None,
    eta: float = 0.0,
    prediction: Prediction = "epsilon",
    clip: bool = True,
    spacing: Literal["leading", "trailing"] | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Run the reverse process from Gaussian noise of ``shape``; returns x_0 (model space).

    Args:
        denoise: ``(x_t, t) -> model output`` (guidance already applied).
        shape: (B, C, H, W) of the samples.
        schedule: the training schedule.
        sampler: ``ddpm`` (ancestral) or ``ddim``.
        steps: timesteps visited (default: all T for DDPM, 50 for DDIM).
        eta: DDIM's noise scale (0: deterministic).
        prediction: what ``denoise`` outputs.
        clip: clip x̂_0 to [-1, 1] at every step.
        spacing: ``leading`` or ``trailing`` (default: leading for DDPM, trailing for DDIM).
        generator: the source of every random number (the samples are reproducible under a seed).
        device: where to sample (default: the generator's device, else the CPU).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler '{sampler}'; expected one of {', '.join(SAMPLERS)}")
    device = torch.device(device) if device is not None else (generator.device if generator else None)
    steps = steps or (schedule.num_steps if sampler == "ddpm" else 50)
    spacing = spacing or ("leading" if sampler == "ddpm" else "trailing")
    ts = timesteps(schedule.num_steps, steps, spacing)
    x = torch.randn(shape, generator=generator, device=device)
    for i, t in enumerate(ts):
        prev = ts[i + 1] if i + 1 < len(ts) else -1
        output = denoise(x, t).to(x.dtype)
        if sampler == "ddpm":
            noise = torch.randn(shape, generator=generator, device=device) if t > 0 else None
            x = ddpm_step(schedule, output, t, x, prev_t=prev, noise=noise, prediction=prediction, clip=clip)
        else:
            noise = torch.randn(shape, generator=generator, device=device) if eta > 0 else None
            x = ddim_step(
                schedule, output, t, prev, x, eta=eta, noise=noise, prediction=prediction, clip=clip
            )
    return x
