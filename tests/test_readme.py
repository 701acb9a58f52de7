"""Every name README.md shows from Python exists by the path it shows.

From the README's ```python blocks: each ``import``/``from ... import`` line is run, and each
``alias.attr`` on a name those lines bind must resolve. Each dotted ``ember.x.y`` name, in those
blocks or in the prose's `code spans`, must resolve from ``import ember`` by attribute access
alone, as a reader would type it, or else be an importable module.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
TEXT = README.read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", TEXT, flags=re.S)
IMPORT_LINES = [
    line.strip()
    for block in BLOCKS
    for line in block.splitlines()
    if re.match(r"\s*(import|from)\s+\w", line)
]
CODE = "\n".join(BLOCKS) + "\n" + "\n".join(re.findall(r"`([^`\n]+)`", TEXT))
DOTTED = sorted(set(re.findall(r"(?<![\w/.-])ember(?:\.[A-Za-z_]\w*)+", CODE)))  # not runs/ember.db


def _bound_names(line: str) -> dict[str, str]:
    """``from ember.nn import lora`` -> {"lora": "ember.nn.lora"}; ``import ember`` -> {"ember": "ember"}."""
    node = ast.parse(line).body[0]
    if isinstance(node, ast.Import):
        return {(a.asname or a.name.split(".")[0]): a.name.split(".")[0] for a in node.names}
    assert isinstance(node, ast.ImportFrom)
    return {(a.asname or a.name): f"{node.module}.{a.name}" for a in node.names}


def test_the_readme_has_python_to_check() -> None:
    assert len(BLOCKS) >= 3 and len(IMPORT_LINES) >= 4 and "ember.fit" in DOTTED


@pytest.mark.parametrize("line", IMPORT_LINES)
def test_import_line_runs(line: str) -> None:
    exec(line, {})


@pytest.mark.parametrize("dotted", DOTTED)
def test_dotted_name_resolves(dotted: str) -> None:
    parts = dotted.split(".")
    obj = importlib.import_module("ember")
    for i, part in enumerate(parts[1:], start=2):
        if hasattr(obj, part):
            obj = getattr(obj, part)
        else:  # a module the README names by its path (ember.cli): importable by that path
            obj = importlib.import_module(".".join(parts[:i]))


def _attribute_uses() -> list[tuple[str, str, str]]:
    """(name, attribute, path) for each ``name.attr`` in the blocks whose name an import line binds."""
    bound: dict[str, str] = {}
    for line in IMPORT_LINES:
        bound.update(_bound_names(line))
    uses = set()
    for block in BLOCKS:
        for name, attr in re.findall(r"\b([A-Za-z_]\w*)\.([A-Za-z_]\w*)", block):
            if name in bound and name != "ember":  # ember.x.y is checked above
                uses.add((name, attr, bound[name]))
    return sorted(uses)


@pytest.mark.parametrize("name,attr,path", _attribute_uses())
def test_attribute_of_an_imported_name_exists(name: str, attr: str, path: str) -> None:
    module, _, last = path.rpartition(".")
    try:
        obj = importlib.import_module(path)
    except ModuleNotFoundError:
        obj = getattr(importlib.import_module(module), last)
    assert hasattr(obj, attr), f"README uses {name}.{attr}, but {path} has no '{attr}'"
