"""Split a data set's examples among federated clients: IID, or non-IID by a Dirichlet prior.

``dirichlet:α`` (Hsu et al. 2019): for each class, the shares of its examples that go to each
client are drawn from Dirichlet(α, ..., α); small α (0.1–0.5) gives clients a few dominant
classes, large α approaches IID.

Example:
    >>> import numpy as np
    >>> parts = partition(np.arange(100) % 4, 5, "dirichlet:0.3", seed=0)
    >>> sum(len(p) for p in parts), len(parts)
    (100, 5)
"""

from __future__ import annotations

import numpy as np


def parse_partition(spec: str) -> tuple[str, float]:
    """``iid`` → ("iid", 0); ``dirichlet:0.3`` → ("dirichlet", 0.3). Raises ValueError otherwise."""
    kind, _, value = spec.partition(":")
    if kind == "iid" and not value:
        return "iid", 0.0
    if kind == "dirichlet":
        try:
            alpha = float(value)
        except ValueError:
            alpha = -1.0
        if alpha > 0:
            return "dirichlet", alpha
    raise ValueError(
        f"--partition {spec!r}: expected 'iid' or 'dirichlet:ALPHA' with ALPHA > 0, e.g. dirichlet:0.3"
    )


def partition(
    labels: np.ndarray, clients: int, spec: str = "iid", *, seed: int = 0, min_size: int = 8
) -> list[np.ndarray]:
    """Indices of each client's examples (every example goes to exactly one client).

    Args:
        labels: (N,) class of each example (used by ``dirichlet``).
        clients: how many clients.
        spec: ``iid`` or ``dirichlet:ALPHA``.
        seed: the draw's seed.
        min_size: a Dirichlet draw leaving a client fewer examples is drawn again.
    """
    kind, alpha = parse_partition(spec)
    n = len(labels)
    if clients < 1 or n < clients * min_size:
        raise ValueError(f"cannot give {clients} clients {min_size} examples each from {n}")
    rng = np.random.default_rng(seed)
    if kind == "iid":
        return [np.sort(part) for part in np.array_split(rng.permutation(n), clients)]
    for _ in range(1000):
        parts: list[list[int]] = [[] for _ in range(clients)]
        for c in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet([alpha] * clients)) * len(members)).astype(int)[:-1]
            for k, chunk in enumerate(np.split(members, cuts)):
                parts[k].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise ValueError(
        f"dirichlet:{alpha} left a client under {min_size} examples in 1000 draws; use fewer clients"
    )


__all__ = ["parse_partition", "partition"]
