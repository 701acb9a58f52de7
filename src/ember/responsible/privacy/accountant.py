"""Privacy accounting for DP-SGD: ε from (σ, q, steps, δ), and σ from a target ε.

Two accountants, both Opacus's (``pip install 'ember[privacy]'``), so ember's figures are the
reference implementation's: ``rdp`` (Rényi DP of the sampled Gaussian mechanism, Mironov et al.
2019, converted to (ε, δ) with the tighter bound of Balle et al. 2020) and ``prv`` (privacy random
variables composed numerically, Gopi et al. 2021: tighter, ~10% lower ε at the same noise).

A step is one noisy gradient of a batch drawn by Poisson sampling with rate ``sample_rate`` (q):
every example is in the batch with probability q, independently.

Example:
    >>> round(epsilon(noise_multiplier=1.5, sample_rate=0.04, steps=2250, delta=1e-5), 5)
    7.32911
    >>> round(noise_multiplier_for(8.0, delta=1e-5, sample_rate=0.04, steps=2250), 3)
    1.416
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

ACCOUNTANTS = ("rdp", "prv")
PIP_PRIVACY = "pip install 'ember[privacy]'"


def _opacus_accountant(name: str) -> Any:
    if name not in ACCOUNTANTS:
        raise ValueError(f"unknown privacy accountant '{name}'; expected one of {', '.join(ACCOUNTANTS)}")
    try:
        from opacus.accountants import PRVAccountant, RDPAccountant
    except ImportError:
        raise ImportError(f"privacy accounting needs opacus: {PIP_PRIVACY}") from None
    return RDPAccountant() if name == "rdp" else PRVAccountant()


@contextmanager
def _quiet() -> Iterator[None]:
    """Opacus warns when the best Rényi order is at the end of its range (early in training, or for
    a σ far from the target while searching); the ε it returns is still a valid upper bound."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the", category=UserWarning)
        yield


def epsilon(
    *, noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str = "rdp"
) -> float:
    """The ε spent by ``steps`` DP-SGD steps with noise σ and sampling rate q, at ``delta``.

    Args:
        noise_multiplier: σ, the noise's standard deviation over the clipping norm.
        sample_rate: q, the probability that an example is in a batch (batch size / data size).
        steps: noisy gradient steps taken.
        delta: δ of the (ε, δ) guarantee (below 1 / data size).
        accountant: ``rdp`` or ``prv``.

    Returns:
        ε (0 before any step; infinite without noise).
    """
    if steps <= 0:
        return 0.0
    if noise_multiplier <= 0:
        return math.inf
    acc = _opacus_accountant(accountant)
    acc.history = [(noise_multiplier, sample_rate, int(steps))]
    with _quiet():
        return float(acc.get_epsilon(delta=delta))


def noise_multiplier_for(
    target_epsilon: float,
    *,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "rdp",
    tolerance: float = 0.01,
) -> float:
    """The smallest σ (to ``tolerance`` in ε) whose ε after ``steps`` steps is at most ``target_epsilon``.

    Raises:
        ValueError: ``target_epsilon`` is not positive.
    """
    if target_epsilon <= 0:
        raise ValueError(f"target epsilon must be positive, got {target_epsilon}")
    _opacus_accountant(accountant)  # the same error as epsilon() when opacus is missing
    from opacus.accountants.utils import get_noise_multiplier

    with _quiet():
        sigma = get_noise_multiplier(
            target_epsilon=target_epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=int(steps),
            accountant=accountant,
            epsilon_tolerance=tolerance,
        )
    return float(sigma)


@dataclass
class Budget:
    """The privacy of one training run, as it goes: fixed σ, q, δ and a growing step count.

    Stored in the run's metrics summary (``privacy/*``) so the model card and ``ember audit privacy`` can show it.
    """

    noise_multiplier: float
    sample_rate: float
    delta: float
    max_grad_norm: float
    accountant: str = "rdp"
    target_epsilon: float | None = None
    steps: int = 0
    dataset_size: int = 0

    def epsilon(self, accountant: str | None = None) -> float:
        """ε spent so far (with this budget's accountant, or ``accountant``)."""
        return epsilon(
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.sample_rate,
            steps=self.steps,
            delta=self.delta,
            accountant=accountant or self.accountant,
        )

    def to_dict(self) -> dict[str, Any]:
        """Everything a reader needs, with ε under both accountants."""
        out = asdict(self)
        out["epsilon"] = self.epsilon()
        out["epsilon_by_accountant"] = {name: self.epsilon(name) for name in ACCOUNTANTS}
        return out


__all__ = ["ACCOUNTANTS", "Budget", "epsilon", "noise_multiplier_for"]
