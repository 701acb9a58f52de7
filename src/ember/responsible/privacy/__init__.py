"""Differential privacy: DP-SGD as a transform, its accountants, and the ``privacy`` config section.

- `DPSGD` / `make_private`: per-example clipping and noise (ember's own per-example gradients,
  checked against Opacus's), Poisson batches, BatchNorm → GroupNorm;
- `epsilon`, `noise_multiplier_for`, `Budget`: RDP and PRV accounting (Opacus's accountants);
- importing this package registers the ``privacy`` training hook, so
  ``ember train configs/fashion-dp.yaml privacy.epsilon=3`` trains privately.
"""

from __future__ import annotations

from typing import Any

from ember.config import ConfigError
from ember.responsible.privacy.accountant import ACCOUNTANTS, Budget, epsilon, noise_multiplier_for
from ember.responsible.privacy.dpsgd import DPSGD, convert_batchnorm, make_private, prepare_model
from ember.responsible.privacy.grad_sample import PerExampleGradients, UnsupportedLayerError
from ember.responsible.privacy.sampling import PoissonLoader
from ember.train.hooks import hooks


@hooks.register("privacy")
def privacy_hook(cfg: Any) -> DPSGD | None:
    """The DP-SGD transform for a config whose ``privacy`` section is on, else None."""
    p = cfg.privacy
    if not p.enabled:
        return None
    if p.epsilon > 0 and p.noise_multiplier > 0:
        raise ConfigError(
            f"privacy.epsilon={p.epsilon} and privacy.noise_multiplier={p.noise_multiplier} both set; "
            "give one (the other is derived)"
        )
    t = cfg.trainer
    if t.accumulate > 1:
        raise ConfigError(
            "privacy: DP-SGD clips one batch per step; set trainer.accumulate=1 and raise data.batch_size"
        )
    if t.clip_grad_norm or t.clip_grad_value:
        raise ConfigError(
            "privacy clips every example's gradient (privacy.max_grad_norm); set trainer.clip_grad_norm=0 "
            "and trainer.clip_grad_value=0"
        )
    if t.precision == "fp16":
        raise ConfigError(
            "privacy: fp16 loss scaling would scale the clipped gradients; use precision fp32 or bf16"
        )
    try:
        return DPSGD(
            noise_multiplier=p.noise_multiplier or None,
            target_epsilon=p.epsilon or None,
            delta=p.delta,
            max_grad_norm=p.max_grad_norm,
            accountant=p.accountant,
            seed=t.seed,
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None


__all__ = [
    "ACCOUNTANTS",
    "DPSGD",
    "Budget",
    "PerExampleGradients",
    "PoissonLoader",
    "UnsupportedLayerError",
    "convert_batchnorm",
    "epsilon",
    "make_private",
    "noise_multiplier_for",
    "prepare_model",
    "privacy_hook",
]
