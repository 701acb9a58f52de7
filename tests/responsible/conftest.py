"""A small table whose labels depend on a sensitive column, registered as the dataset ``fair-toy``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from ember.data import ArrayData, DataBundle
from ember.data.datasets import registry


@dataclass
class ColumnTable(ArrayData):
    """ArrayData that keeps raw columns through ``subset`` (the protocol of ember.responsible.columns)."""

    columns: dict[str, np.ndarray] = field(default_factory=dict)

    def subset(self, idx):  # type: ignore[no-untyped-def]
        idx = np.asarray(idx, dtype=np.int64)
        base = super().subset(idx)
        return ColumnTable(base.x, base.y, {k: v[idx] for k, v in self.columns.items()})


def table(n: int, seed: int, classes: int = 2) -> ColumnTable:
    rng = np.random.default_rng(seed)
    sex = rng.choice(["female", "male"], n, p=[0.4, 0.6])
    race = rng.choice(["a", "b"], n)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    x[:, 0] += (sex == "male") * 1.5  # a proxy of the sensitive column
    score = x[:, 1] + 1.2 * (sex == "male") + rng.normal(size=n)  # the group itself shifts the label
    y = np.digitize(score, np.quantile(score, np.linspace(0, 1, classes + 1)[1:-1]))
    return ColumnTable(torch.from_numpy(x), torch.from_numpy(y).long(), {"sex": sex, "race": race})


def fair_toy(*, n: int = 1200, classes: int = 2) -> DataBundle:
    """A small table whose labels depend on a sensitive column (sex), for fairness tests."""
    train, test = table(n, 0, classes), table(n // 2, 1, classes)
    names = [str(c) for c in range(classes)]
    return DataBundle(train, test, classes, names, (6,), "classification", "fair-toy")


if "fair-toy" not in registry:
    registry.register("fair-toy")(fair_toy)

CONFIG = {
    "data": {"name": "fair-toy", "batch_size": 64},
    "model": {"name": "mlp", "width": 32, "depth": 2},
    "optim": {"lr": 0.01},
    "trainer": {"epochs": 4, "log_every": 5},
}


@pytest.fixture
def fair_config() -> dict:
    return json.loads(json.dumps(CONFIG))


@pytest.fixture
def cli():  # type: ignore[no-untyped-def]
    """The real ``ember`` command in a subprocess (as tests/e2e's fixture)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]

    def ember(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run([sys.executable, "-m", "ember", *args], capture_output=True, text=True, env=env,
                              cwd=root, timeout=600)  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(
                f"ember {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    return ember
