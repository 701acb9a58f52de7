"""The README's "Your own data" commands, run as written on files made here (and its Python snippet)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
MARK = "<!-- own-data:"


def readme_blocks() -> tuple[list[str], str]:
    """The section's commands (comments dropped) and its Python snippet."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(MARK) :]
    commands_block = section.split("```", 2)[1]
    commands = [
        line.split("  #")[0].strip() for line in commands_block.splitlines() if line.startswith("ember ")
    ]
    python = re.search(r"```python\n(.*?)```", section, re.S)
    assert python is not None
    return commands, python.group(1)


def make_files(root: Path) -> None:
    rng = np.random.default_rng(0)
    lines = ["age,job,hours,income"]
    for i in range(240):
        age, job = int(rng.integers(18, 70)), str(rng.choice(["clerk", "cook", "pilot"]))
        income = ">50K" if (age > 40) != (job == "pilot") else "<=50K"
        lines.append(
            f"{'' if i % 9 == 0 else age},{'?' if i % 7 == 0 else job},{int(rng.integers(20, 61))},{income}"
        )
    (root / "people.csv").write_text("\n".join(lines) + "\n")
    for label, value in (("dark", 40), ("light", 210)):
        (root / "photos" / label).mkdir(parents=True)
        (root / "reviews" / label).mkdir(parents=True)
        for i in range(12):
            pixels = np.clip(rng.normal(value, 20, (8, 8)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(root / "photos" / label / f"{i}.png")
            (root / "reviews" / label / f"{i}.txt").write_text(f"{label} {'!' * (i % 4)} review number {i}")
    rows = [f'"{"great" if i % 2 else "poor"}, said reader {i}",{5 if i % 2 else 1}' for i in range(40)]
    (root / "reviews.csv").write_text("review,stars\n" + "\n".join(rows) + "\n")


@pytest.mark.slow
def test_own_data_commands_run_as_written(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    pytest.importorskip("tensorboard")
    commands, python = readme_blocks()
    assert len(commands) >= 8
    make_files(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EMBER_RUNS": str(tmp_path / "runs")}
    for command in commands:
        proc = subprocess.run(
            [sys.executable, "-m", "ember", *shlex.split(command)[1:]],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, f"{command}\n{proc.stdout}\n{proc.stderr}"
        assert "Traceback" not in proc.stderr
    assert (tmp_path / "people.yaml").is_file() and (tmp_path / "runs" / "mlflow.db").is_file()
    assert any((tmp_path / "runs").glob("*/tensorboard/events.out.tfevents.*"))
    proc = subprocess.run(
        [sys.executable, "-c", python], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    assert "tensor([[" in proc.stdout
