"""DP-SGD (Abadi et al. 2016) as a transform of model, optimizer and loader.

`DPSGD` is applied before the one training loop runs and leaves it unchanged:

- the **model** gets hooks that keep each layer's input and output gradient
  (`ember.responsible.privacy.grad_sample`); BatchNorm, which mixes examples, is first replaced
  by GroupNorm (same parameters, a message says so);
- the **optimizer** (the same object) gets a step pre-hook: every example's gradient is clipped
  to ``max_grad_norm`` C, the clipped gradients summed, Gaussian noise of standard deviation σC
  added, and the sum divided by the expected batch size before the optimizer's own update;
- the **loader** becomes a `PoissonLoader` with the same number of batches an epoch.

σ is given, or found from a target ε for the run's number of steps. ε spent is logged as
``privacy/epsilon`` (and shown on the progress bar) every ``log_every`` steps; when fit ends the
whole budget (σ, q, δ, C, steps, ε under RDP and PRV) is put in the run's metrics summary.

Example:
    >>> import torch, tempfile
    >>> from torch import nn
    >>> from ember import Trainer
    >>> X, y = torch.randn(256, 4), torch.randint(0, 2, (256,))
    >>> dp = DPSGD(noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-3)
    >>> trainer = Trainer(nn.Linear(4, 2), lr=0.1, epochs=2, batch_size=32, transforms=[dp],
    ...                   runs_dir=tempfile.mkdtemp())
    >>> result = trainer.fit((X, y))
    >>> dp.budget.steps, round(result.metrics["privacy/epsilon"], 2) > 0
    (16, True)
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn

from ember.nn.structure import batchnorm_to_groupnorm
from ember.responsible.privacy.accountant import ACCOUNTANTS, Budget, noise_multiplier_for
from ember.responsible.privacy.grad_sample import PerExampleGradients
from ember.responsible.privacy.sampling import PoissonLoader, poisson_like

log = logging.getLogger("ember.privacy")


def convert_batchnorm(model: nn.Module) -> list[str]:
    """Replace every BatchNorm in ``model`` by a GroupNorm (:func:`ember.nn.structure.batchnorm_to_groupnorm`)."""
    return batchnorm_to_groupnorm(model)


def prepare_model(model: nn.Module) -> nn.Module:
    """``model`` with BatchNorm converted (a logged message lists how many); the same object."""
    replaced = convert_batchnorm(model)
    if replaced:
        log.warning(
            "privacy: %d BatchNorm layer(s) replaced by GroupNorm (%s): BatchNorm mixes the examples of "
            "a batch, which per-example clipping forbids",
            len(replaced),
            ", ".join(replaced[:4]) + (" ..." if len(replaced) > 4 else ""),
        )
    return model


class DPSGD:
    """The DP-SGD transform: ``dp(model, optimizer, loader, total_steps=...)`` → the same three, private.

    It is also a training callback (pass it as both, or let the Trainer do it): it logs ε.

    Args:
        noise_multiplier: σ; give it or ``target_epsilon``.
        target_epsilon: the ε to reach at the end of training; σ is found for the run's steps.
        delta: δ of the guarantee (keep it below 1 / data size).
        max_grad_norm: C, the per-example gradient norm bound.
        accountant: ``rdp`` or ``prv``, for the σ search and the ε reported.
        seed: seeds the Poisson draws and the noise (not a cryptographic source: like Opacus's
            default, fine for research, not for a release that must resist an attacker who can
            predict the generator).
    """

    def __init__(
        self,
        *,
        noise_multiplier: float | None = None,
        target_epsilon: float | None = None,
        delta: float = 1e-5,
        max_grad_norm: float = 1.0,
        accountant: str = "rdp",
        seed: int = 0,
    ) -> None:
        if (noise_multiplier is None) == (target_epsilon is None):
            raise ValueError("DP-SGD needs exactly one of noise_multiplier (σ) and target_epsilon (ε)")
        if accountant not in ACCOUNTANTS:
            raise ValueError(f"privacy.accountant={accountant!r} is not one of {list(ACCOUNTANTS)}")
        if max_grad_norm <= 0:
            raise ValueError(f"privacy.max_grad_norm must be positive, got {max_grad_norm}")
        if not 0 < delta < 1:
            raise ValueError(f"privacy.delta must be in (0, 1), got {delta}")
        self.noise_multiplier, self.target_epsilon = noise_multiplier, target_epsilon
        self.delta, self.max_grad_norm, self.accountant, self.seed = delta, max_grad_norm, accountant, seed
        self.budget: Budget | None = None
        self.grads: PerExampleGradients | None = None
        self.loader: PoissonLoader | None = None
        self._generator: torch.Generator | None = None

    # ------------------------------------------------------------------ the transform

    structure = ("batchnorm_to_groupnorm",)
    """The structure transforms (`ember.nn.structure`) DP-SGD needs; a run records them in its spec."""

    def model(self, model: nn.Module) -> nn.Module:
        """The model-structure part (BatchNorm → GroupNorm), applied wherever the model is built."""
        return prepare_model(model)

    def __call__(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, loader: Any, *, total_steps: int
    ) -> tuple[nn.Module, torch.optim.Optimizer, PoissonLoader]:
        prepare_model(model)  # a no-op when the recipe already did it
        self.loader = loader if isinstance(loader, PoissonLoader) else poisson_like(loader, seed=self.seed)
        q, n = self.loader.sample_rate, len(self.loader.y)
        sigma = self.noise_multiplier
        if sigma is None:
            assert self.target_epsilon is not None
            sigma = noise_multiplier_for(
                self.target_epsilon,
                delta=self.delta,
                sample_rate=q,
                steps=total_steps,
                accountant=self.accountant,
            )
            log.info(
                "privacy: σ = %.4f reaches ε = %g after %d steps (q = %.5f)",
                sigma,
                self.target_epsilon,
                total_steps,
                q,
            )
        if self.delta * n > 1:
            log.warning(
                "privacy: δ = %g is above 1/N = %g; a mechanism could then release an example outright",
                self.delta,
                1 / n,
            )
        self.budget = Budget(
            noise_multiplier=sigma,
            sample_rate=q,
            delta=self.delta,
            max_grad_norm=self.max_grad_norm,
            accountant=self.accountant,
            target_epsilon=self.target_epsilon,
            dataset_size=n,
        )
        if self.grads is not None:
            self.grads.remove()
        self.grads = PerExampleGradients(model)
        optimizer.register_step_pre_hook(self._privatize)
        return model, optimizer, self.loader

    @torch.no_grad()
    def _privatize(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """Before the optimizer's update: gradients ← (Σ clipped + N(0, σ²C²)) / (q N)."""
        assert self.grads is not None and self.budget is not None and self.loader is not None
        summed, _ = self.grads.clipped_sum(self.max_grad_norm)
        std = self.budget.noise_multiplier * self.max_grad_norm
        scale = 1.0 / self.loader.expected_batch_size
        for group in optimizer.param_groups:
            for p in group["params"]:
                if not p.requires_grad:
                    continue
                grad = summed.get(p)
                if grad is None:
                    grad = torch.zeros_like(p, dtype=torch.float32)
                noise = torch.randn(p.shape, generator=self._noise_generator(p.device), device=p.device)
                p.grad = ((grad + std * noise) * scale).to(p.dtype)
        self.budget.steps += 1

    def _noise_generator(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(self.seed + 0x0D9)
        return self._generator

    # ------------------------------------------------------------------ callback events

    def on_fit_start(self, state: Any) -> None:
        if self.budget is not None:
            self.budget.steps = state.step  # a resumed run has spent its earlier steps' budget

    def on_log(self, state: Any, metrics: dict[str, float]) -> None:
        if self.budget is None:
            return
        eps = self.budget.epsilon("rdp")  # milliseconds; PRV's ε is computed once at the end
        metrics["privacy/epsilon"] = state.metrics["privacy/epsilon"] = eps

    def on_fit_end(self, state: Any) -> None:
        if self.budget is None or self.loader is None:
            return
        report = self.budget.to_dict()
        state.metrics.update(
            {
                "privacy/epsilon": report["epsilon"],
                "privacy/epsilon_rdp": report["epsilon_by_accountant"]["rdp"],
                "privacy/epsilon_prv": report["epsilon_by_accountant"]["prv"],
                "privacy/delta": self.budget.delta,
                "privacy/noise_multiplier": self.budget.noise_multiplier,
                "privacy/sample_rate": self.budget.sample_rate,
                "privacy/max_grad_norm": self.budget.max_grad_norm,
                "privacy/steps": float(self.budget.steps),
                "privacy/dataset_size": float(self.budget.dataset_size),
                "privacy/empty_batch_bound": self.loader.empty_bound(self.budget.steps),
            }
        )
        if math.isfinite(report["epsilon"]):
            log.info(
                "privacy: ε = %.3f at δ = %g after %d steps", report["epsilon"], self.delta, self.budget.steps
            )


def make_private(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: Any,
    *,
    epochs: int,
    noise_multiplier: float | None = None,
    target_epsilon: float | None = None,
    delta: float = 1e-5,
    max_grad_norm: float = 1.0,
    accountant: str = "rdp",
    seed: int = 0,
) -> tuple[nn.Module, torch.optim.Optimizer, PoissonLoader, DPSGD]:
    """DP-SGD for a hand-written loop: returns the model, optimizer and loader to use, and the
    transform (its ``budget.epsilon()`` is ε spent so far). The loop must compute a batch-mean loss.
    """
    dp = DPSGD(
        noise_multiplier=noise_multiplier,
        target_epsilon=target_epsilon,
        delta=delta,
        max_grad_norm=max_grad_norm,
        accountant=accountant,
        seed=seed,
    )
    model, optimizer, poisson = dp(model, optimizer, loader, total_steps=epochs * len(loader))
    return model, optimizer, poisson, dp


__all__ = ["DPSGD", "convert_batchnorm", "make_private", "prepare_model"]
