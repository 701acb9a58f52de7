"""The evaluation stage knows no family: it asks the task contract, and reads runs through load_run."""

from __future__ import annotations

import ast
from pathlib import Path

from ember import tasks

EVALUATE = Path(__file__).resolve().parents[2] / "src" / "ember" / "evaluate"


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string constant of the code, docstrings left out."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_no_family_name_in_the_evaluation_stage() -> None:
    names = set(tasks.list_tasks())
    found = [
        f"{path.name}:{line}: {value!r}"
        for path in sorted(EVALUATE.glob("*.py"))
        for line, value in _strings(ast.parse(path.read_text()))
        if value in names
    ]
    assert not found, "evaluate/ switches on task names; ask ember.tasks.contract instead:\n" + "\n".join(
        found
    )


def test_runs_are_read_through_load_run() -> None:
    users = [
        p.name
        for p in EVALUATE.glob("*.py")
        if "load_run_model" in p.read_text() or "Prepared" in p.read_text()
    ]
    assert not users, f"read runs with ember.recipe.load_run (Python runs have no Prepared): {users}"
