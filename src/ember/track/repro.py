"""Reproducibility: seeding, deterministic mode, and what the environment and source were."""

from __future__ import annotations

import functools
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


@functools.cache
def _package_versions() -> tuple[tuple[str, str], ...]:
    """The installed versions of :data:`_PACKAGES`, read once per process (~1 ms each from their
    metadata): a package this process has imported stays the version it imported, whatever is
    installed over it while it runs."""
    packages = []
    for name in _PACKAGES:
        try:
            packages.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            continue
    return tuple(packages)


def environment() -> dict[str, Any]:
    """Python, platform, CPU/GPU and key package versions, as recorded with every run."""
    packages = dict(_package_versions())
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


_source: tuple[Any, dict[str, Any]] = (None, {})  # (stamp, version) of the last source_version


def source_version() -> dict[str, Any]:
    """The git commit (and whether the tree was dirty) of ember's checkout, else a hash of its source.

    Two git commands and a hash of every source file take 10–30 ms, paid by every run. The answer
    is kept in the process while nothing it is read from has changed: each call first compares the
    modification time and size of every file under ember's source folder and of git's ``HEAD``,
    index, refs and top-level ``.gitignore`` (~1 ms) with those the kept answer was read under, and
    reads it again when any differs (an edit, a new or removed file, a commit, a checkout, staging).
    """
    global _source
    root = Path(__file__).resolve().parents[1]
    stamp = _source_stamp(root)  # before reading: a change during the read shows at the next call
    if _source[0] != stamp:
        _source = (stamp, _read_source_version(root))
    return dict(_source[1])


def _read_source_version(root: Path) -> dict[str, Any]:
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


def _source_stamp(root: Path) -> tuple[Any, ...]:
    """``(path, mtime_ns, size)`` of every file :func:`source_version` reads or git compares."""
    files = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if d != "__pycache__")
        files += [os.path.join(folder, name) for name in sorted(names)]
    files += [str(p) for p in _git_files(root)]
    stamps: list[tuple[str, int | None, int | None]] = []
    for path in files:
        try:
            info = os.stat(path)
            stamps.append((path, info.st_mtime_ns, info.st_size))
        except OSError:
            stamps.append((path, None, None))
    return (os.environ.get("GIT_DIR"), tuple(stamps))


def _git_files(root: Path) -> list[Path]:
    """Git's files whose change can change the commit or the dirty flag of ``root``'s checkout:
    ``HEAD``, the index, the ref ``HEAD`` names, ``packed-refs`` and the top-level ``.gitignore``
    (a plain checkout, or a worktree whose ``.git`` file points to its folder); none outside git."""
    top = next((d for d in (root, *root.parents) if (d / ".git").exists()), None)
    if top is None:
        return []
    git = top / ".git"
    if git.is_file():  # a worktree: "gitdir: <its folder>", which names the shared folder in "commondir"
        try:
            git = (top / git.read_text().split(":", 1)[1].strip()).resolve()
            common = (git / (git / "commondir").read_text().strip()).resolve()
        except (OSError, IndexError):
            return [top / ".git"]
    else:
        common = git
    files = [top / ".git", git / "HEAD", git / "index", common / "packed-refs", top / ".gitignore"]
    try:
        head = (git / "HEAD").read_text().strip()
    except OSError:
        return files
    if head.startswith("ref:"):
        ref = head[4:].strip()
        files += [git / ref, common / ref]
    return files


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
