"""Every script in examples/ runs to the end in its fast mode and prints a test accuracy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def test_there_are_examples() -> None:
    assert {p.name for p in EXAMPLES} >= {"quickstart.py", "recipe.py"}


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EMBER_RUNS": str(tmp_path / "runs")}
    proc = subprocess.run(
        [sys.executable, str(script), "--fast"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,  # examples must not depend on the working directory
        timeout=300,
    )
    assert proc.returncode == 0, f"{script.name} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    accuracy = float(
        next(line.split()[-1] for line in proc.stdout.splitlines() if line.startswith("test accuracy"))
    )
    assert 0.0 <= accuracy <= 1.0
    assert any((tmp_path / "runs").iterdir())  # the run was recorded in the store
