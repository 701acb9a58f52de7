"""Reproducibility: seeding, deterministic mode, and what the environment and source were."""

from __future__ import annotations

import hashlib
import os
import platform
import random
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool) -> None:
    """Ask torch for deterministic kernels only (an op without one raises, naming itself)."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if enabled or torch.are_deterministic_algorithms_enabled():  # the call imports inductor (~2 s)
        torch.use_deterministic_algorithms(enabled, warn_only=False)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = False


_PACKAGES = ("torch", "numpy", "safetensors", "scikit-learn", "torchmetrics", "pyyaml", "ember")


def environment() -> dict[str, Any]:
    """Python, platform, CPU/GPU and key package versions, as recorded with every run."""
    packages = {}
    for name in _PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "packages": packages,
    }
    return env


def source_version() -> dict[str, Any]:
    """The git commit (and whether the tree was dirty) of ember's checkout, else a hash of its source."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "."], cwd=root, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        return {"git": sha, "dirty": bool(dirty), "source_sha256": source_hash(root)}
    except (OSError, subprocess.SubprocessError):
        return {"git": None, "dirty": None, "source_sha256": source_hash(root)}


def source_hash(root: Path) -> str:
    """sha256 over ember's .py files (names and contents), stable across machines."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """The sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
