"""A Flower client that trains ember's model with ember's task and loop on its share of the data.

The same client runs inside Flower's simulation and as its own process against a real Flower
server. Each round it loads the global weights, trains ``trainer.epochs`` local epochs through the
`Trainer` (in a scratch run store: a round is a step of the federated run, not a run of its own),
and returns its weights and example count. FedProx's proximal term is an optimizer transform
(`Proximal`); with ``privacy`` on, local training is DP-SGD with σ calibrated once for all rounds.
"""

from __future__ import annotations

import dataclasses
import tempfile
from typing import Any

import numpy as np
import torch
from torch import nn

from ember.config import Config
from ember.data import ArrayData, DataBundle, make_loader
from ember.recipe import build_model, build_task
from ember.responsible._fit import fit_on
from ember.train import evaluate
from ember.train import hooks as train_hooks


def get_weights(model: nn.Module) -> list[np.ndarray]:
    """The model's state (parameters and buffers) as numpy arrays, in ``state_dict`` order."""
    return [t.detach().cpu().numpy() for t in model.state_dict().values()]


def set_weights(model: nn.Module, weights: list[np.ndarray]) -> None:
    """Load arrays from `get_weights` (averaged integer buffers are rounded back to their dtype)."""
    state = model.state_dict()
    if len(weights) != len(state):
        raise ValueError(f"got {len(weights)} arrays for a model with {len(state)} tensors")
    new = {}
    for (name, old), array in zip(state.items(), weights):
        value = torch.as_tensor(np.asarray(array))
        new[name] = value.round().to(old.dtype) if not old.is_floating_point() else value.to(old.dtype)
    model.load_state_dict(new)


class Proximal:
    """FedProx's proximal term μ/2 |w - w_global|² as an optimizer transform: grad += μ (w - w_global).

    Added after any DP-SGD transform's noisy gradient (it touches no data, so privacy is kept).
    """

    def __init__(self, mu: float) -> None:
        self.mu = mu

    def __call__(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, loader: Any, *, total_steps: int
    ) -> Any:
        anchors = {p: p.detach().clone() for group in optimizer.param_groups for p in group["params"]}
        mu = self.mu

        def pull(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            with torch.no_grad():
                for p, anchor in anchors.items():
                    if p.grad is not None:
                        p.grad.add_(p - anchor, alpha=mu)

        optimizer.register_step_pre_hook(pull)
        return model, optimizer, loader


def private_config(cfg: Config, examples: int, rounds: int) -> Config:
    """``cfg`` with a target ε turned into the σ that spends it over all of this client's rounds."""
    if not cfg.privacy.epsilon:
        return cfg
    from ember.responsible.privacy import noise_multiplier_for

    q = min(1.0, cfg.data.batch_size / examples)
    steps = rounds * cfg.trainer.epochs * int(np.ceil(examples / cfg.data.batch_size))
    sigma = noise_multiplier_for(
        cfg.privacy.epsilon,
        delta=cfg.privacy.delta,
        sample_rate=q,
        steps=steps,
        accountant=cfg.privacy.accountant,
    )
    return dataclasses.replace(
        cfg, privacy=dataclasses.replace(cfg.privacy, epsilon=0.0, noise_multiplier=sigma)
    )


def _numpy_client_base() -> type:
    try:
        from flwr.client import NumPyClient
    except ImportError:
        raise ImportError("federated learning needs Flower: pip install 'ember[federated]'") from None
    return NumPyClient


def make_client(cfg: Config, bundle: DataBundle, data: ArrayData, *, client_id: int, rounds: int) -> Any:
    """A Flower ``NumPyClient`` for ``data`` (this client's share); ``rounds`` calibrates DP's σ."""
    base = _numpy_client_base()
    cfg = private_config(cfg, len(data.y), rounds)

    class EmberClient(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            self.model = build_model(cfg, bundle)

        def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
            return get_weights(self.model)

        def fit(
            self, parameters: list[np.ndarray], config: dict[str, Any]
        ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
            set_weights(self.model, parameters)
            server_round = int(config.get("server_round", 1))
            mu = float(config.get("proximal_mu", 0.0))
            local = dataclasses.replace(
                cfg,
                name=f"{cfg.name or 'federated'}-client{client_id}",
                trainer=dataclasses.replace(
                    cfg.trainer, seed=cfg.trainer.seed + 7919 * server_round + client_id
                ),
            )
            transforms = train_hooks.active(local) + ([Proximal(mu)] if mu > 0 else [])
            with tempfile.TemporaryDirectory(prefix="ember-client-") as scratch:
                _, result = fit_on(
                    local, bundle, data, model=self.model, runs_dir=scratch, transforms=transforms
                )
            metrics: dict[str, Any] = {"train_loss": float(result.metrics.get("train/loss", float("nan")))}
            if "privacy/noise_multiplier" in result.metrics:  # ε spent by this client over the rounds so far
                from ember.responsible.privacy import epsilon

                metrics["epsilon"] = epsilon(
                    noise_multiplier=result.metrics["privacy/noise_multiplier"],
                    sample_rate=result.metrics["privacy/sample_rate"],
                    steps=int(result.metrics["privacy/steps"]) * server_round,
                    delta=cfg.privacy.delta,
                    accountant=cfg.privacy.accountant,
                )
            return get_weights(self.model), len(data.y), metrics

        def evaluate(
            self, parameters: list[np.ndarray], config: dict[str, Any]
        ) -> tuple[float, int, dict[str, Any]]:
            set_weights(self.model, parameters)
            loader = make_loader(data, batch_size=cfg.data.eval_batch_size, shuffle=False)
            metrics = evaluate(self.model, loader, build_task(cfg, bundle))
            return (
                float(metrics["loss"]),
                len(data.y),
                {"accuracy": float(metrics.get("accuracy", float("nan")))},
            )

    return EmberClient()


__all__ = ["Proximal", "get_weights", "make_client", "private_config", "set_weights"]
