from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def ember(
    *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real ``ember`` command line in a subprocess."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "ember", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ROOT,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"ember {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


@pytest.fixture
def cli():  # type: ignore[no-untyped-def]
    return ember


def fetch_or_skip(name: str) -> None:
    """Fetch a pinned data set into the cache, or skip when the machine is offline (not on a bad pin)."""
    import urllib.error

    from ember.data import SourceUnavailableError, fetch

    try:
        fetch(name, progress=False)
    except SourceUnavailableError as error:
        reasons = [reason for _, reason in error.failures]
        if any(isinstance(r, urllib.error.HTTPError) for r in reasons):
            raise
        pytest.skip(f"network unreachable: {reasons[0]}")


@pytest.fixture(scope="session")
def fetched():  # type: ignore[no-untyped-def]
    """``fetched(name)``: the pinned data set in the cache, or the test skipped when offline."""
    return fetch_or_skip
