"""Tracking: the run store (SQLite + run folders) and reproducibility records."""

from ember.track.repro import environment, seed_everything, set_deterministic, sha256_file, source_version
from ember.track.runs import Run, RunNotFoundError, RunRecord, RunStore, RunStoreError, default_root

__all__ = [
    "Run",
    "RunNotFoundError",
    "RunRecord",
    "RunStore",
    "RunStoreError",
    "default_root",
    "environment",
    "seed_everything",
    "set_deterministic",
    "sha256_file",
    "source_version",
]
