"""The README's "Scaling" commands, run as written: 1 process, then 2 (DDP, FSDP2, EMA with restarts)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ember.track import RunStore

ROOT = Path(__file__).resolve().parents[2]
MARK = "<!-- scaling:"


def readme_commands() -> list[str]:
    """The section's first block's ``ember`` commands, comments dropped."""
    section = (ROOT / "README.md").read_text().split(MARK, 1)[1]
    block = section.split("```", 2)[1]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.startswith("ember ")]


@pytest.mark.slow
def test_scaling_commands_run_as_written(tmp_path: Path) -> None:
    commands = readme_commands()
    assert len(commands) == 4 and sum("--nproc 2" in c for c in commands) == 3
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EMBER_RUNS": str(tmp_path / "runs")}
    for command in commands:
        proc = subprocess.run(
            [sys.executable, "-m", "ember", *shlex.split(command)[1:]],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, f"{command}\n{proc.stdout}\n{proc.stderr}"
        assert "Traceback" not in proc.stderr and proc.stdout.count("trained ") == 1, proc.stdout
    records = sorted(RunStore(tmp_path / "runs").list(), key=lambda r: r.created)
    assert [r.status for r in records] == ["completed"] * 4  # one run a command, however many ranks
    sizes = [r.environment.get("distributed", {}).get("world_size", 1) for r in records]
    assert sizes == [1, 2, 2, 2]
    assert len({r.summary["steps"] for r in records}) == 1  # the global batch: the same steps
    assert (records[-1].folder / "ema.safetensors").is_file()
