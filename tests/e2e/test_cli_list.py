"""`ember list KIND` prints every registered name with a one-line description."""

from __future__ import annotations

import pytest

from ember.cli import main
from ember.cli.listing import KINDS, registry


@pytest.mark.parametrize("kind", KINDS)
def test_every_name_has_a_description(kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", kind]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = registry(kind).names()
    assert [line.split()[0] for line in lines] == names
    bare = [line for line in lines if len(line.split(maxsplit=1)) < 2]
    assert not bare, f"{kind} without a description (the builder's docstring): {bare}"
    assert not any("``" in line or ":class:" in line for line in lines)
