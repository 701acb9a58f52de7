"""Shared fixtures: a private run store and data cache per test, one torch thread."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBER_RUNS", str(tmp_path / "runs"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


@pytest.fixture
def toy_data() -> tuple[torch.Tensor, torch.Tensor]:
    """A linearly separable 3-class problem: 96 points in 8 dimensions."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(96) % 3
    centers = torch.randn(3, 8, generator=g) * 3
    x = centers[y] + torch.randn(96, 8, generator=g)
    return x, y


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
