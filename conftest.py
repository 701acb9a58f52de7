"""pytest runs the docstring examples of src/ember too (``--doctest-modules``, pyproject.toml).

Each example gets a private run store, as each test does (tests/conftest.py), so nothing lands in
the checkout's ``runs/``; the session keeps its hardware measurements in a file of its own. The
working directory stays the repository root: examples read ``configs/``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from _pytest.doctest import DoctestItem


@pytest.fixture(autouse=True, scope="session")
def _measurements_kept_privately(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Hardware measurements (`ember.train.measured`) are kept in a file of the session's, never
    the user's ``~/.cache``: measured once per session, as a process of ember's would."""
    before = os.environ.get("EMBER_MEASURE_CACHE")
    os.environ["EMBER_MEASURE_CACHE"] = str(tmp_path_factory.mktemp("measured") / "measured.json")
    yield
    if before is None:
        os.environ.pop("EMBER_MEASURE_CACHE", None)
    else:
        os.environ["EMBER_MEASURE_CACHE"] = before


@pytest.fixture(autouse=True)
def _doctest_run_store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if isinstance(request.node, DoctestItem):
        monkeypatch.setenv("EMBER_RUNS", str(tmp_path / "runs"))
