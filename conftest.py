"""pytest runs the docstring examples of src/ember too (``--doctest-modules``, pyproject.toml).

Each example gets a private run store, as each test does (tests/conftest.py), so nothing lands in
the checkout's ``runs/``. The working directory stays the repository root: examples read
``configs/``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _pytest.doctest import DoctestItem


@pytest.fixture(autouse=True)
def _doctest_run_store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if isinstance(request.node, DoctestItem):
        monkeypatch.setenv("EMBER_RUNS", str(tmp_path / "runs"))
