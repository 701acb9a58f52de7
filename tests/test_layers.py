"""The layer order of ARCHITECTURE.md, checked over every import of an ember module in src/ember.

Each module may import modules of its own layer or of lower ones, never of a higher one. Imports
inside functions count as much as those at the top of a file: a lazy import keeps ``import ember``
fast, it does not make an upward edge acceptable. ``ember/__init__.py`` and ``ember/__main__.py``
sit above everything and may import anything; no module imports the top-level package itself.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "ember"

# Lowest first; the names are the first part of the dotted path under ``ember``.
LAYERS: list[tuple[str, set[str]]] = [
    ("bottom tier", {"_registry", "_patterns", "_io", "_version", "errors", "config"}),
    ("nn", {"nn"}),
    ("data/track/metrics/decoding", {"data", "track", "metrics", "decoding"}),
    ("models", {"models"}),
    ("tasks", {"tasks"}),
    ("train", {"train"}),
    ("recipe", {"recipe"}),
    ("stages", {"evaluate", "deploy", "generative", "responsible"}),
    ("cli", {"cli"}),
]
TOP = len(LAYERS)  # ember/__init__.py and __main__.py: the package's face, above every layer
RANK = {part: rank for rank, (_, parts) in enumerate(LAYERS) for part in parts}
RANK.update({"": TOP, "__main__": TOP})

# Upward edges that stay for now, as (importing part, imported part): the reason, e.g.
#   ("tasks", "evaluate"): "the task contract's baselines need evaluate's statistics; see issue N"
# Every entry must still be needed (test_allowed_edges_still_exist), so the list only shrinks.
# Empty: every import follows the order.
ALLOWED: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Edge:
    file: str  # path relative to src/
    line: int
    source: str  # importing module, e.g. "ember.tasks.seq2seq"
    target: str  # imported module, e.g. "ember.metrics"

    def __str__(self) -> str:
        return (
            f"{self.file}:{self.line}: {self.source} imports {self.target} "
            f"({_layer(self.source)} -> {_layer(self.target)})"
        )


def _part(module: str) -> str:
    """``ember.tasks.seq2seq`` -> ``tasks``; ``ember`` -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _layer(module: str) -> str:
    rank = RANK[_part(module)]
    return LAYERS[rank][0] if rank < TOP else "the ember package itself"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(dotted: str) -> bool:
    """Whether ``ember.x.y`` names a module or package of the source tree (not a name inside one)."""
    path = SRC.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _targets(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The ember modules an import node loads, as dotted names."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:  # relative: resolve against this module's package
            base = module.split(".")
            base = base if is_package else base[:-1]
            base = base[: len(base) - (node.level - 1)]
            origin = ".".join(base + ([node.module] if node.module else []))
        else:
            origin = node.module or ""
        # ``from ember import models`` loads ember.models; ``from ember import __version__`` loads ember
        found = [f"{origin}.{a.name}" for a in node.names if _is_module(f"{origin}.{a.name}")]
        return found or [origin]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute | ast.Name)
        and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return [node.args[0].value]
    return []


def edges() -> list[Edge]:
    """Every import of an ember module by a module of src/ember, lazy ones included."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            for target in _targets(node, module, path.name == "__init__.py"):
                if target == "ember" or target.startswith("ember."):
                    line = getattr(node, "lineno", 0)
                    found.append(Edge(str(path.relative_to(SRC)), line, module, target))
    return found


def upward(edge: Edge) -> bool:
    return RANK[_part(edge.target)] > RANK[_part(edge.source)]


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or p.is_dir()}
    parts -= {"__init__", "__pycache__"}
    missing = sorted(parts - set(RANK))
    assert not missing, f"src/ember/{missing} has no layer: add it to LAYERS here and to ARCHITECTURE.md"


def test_imports_follow_the_layers() -> None:
    all_edges = edges()
    assert len(all_edges) > 200, "the import scan found too few imports to be reading the package"
    bad = [e for e in all_edges if upward(e) and (_part(e.source), _part(e.target)) not in ALLOWED]
    assert not bad, "imports against the layer order (see ARCHITECTURE.md):\n" + "\n".join(map(str, bad))


def test_allowed_edges_still_exist() -> None:
    pairs = {(_part(e.source), _part(e.target)) for e in edges() if upward(e)}
    stale = sorted(set(ALLOWED) - pairs)
    assert not stale, f"these allowed upward edges are gone: remove them from ALLOWED: {stale}"


def test_architecture_names_every_module_and_layer() -> None:
    text = (SRC.parent / "ARCHITECTURE.md").read_text()
    modules = [p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"]
    unnamed = [str(p.relative_to(SRC)) for p in modules if p.stem not in text]
    assert not unnamed, f"ARCHITECTURE.md does not name these modules: {unnamed}"
    for name, parts in LAYERS:
        assert all(f"`{part}`" in text for part in parts), f"ARCHITECTURE.md's layer table lacks {name}"


def test_lazy_upward_imports_are_caught(tmp_path: Path) -> None:
    """The scan sees an import inside a function, and a relative one."""
    tree = ast.parse("def f():\n    from ember.recipe import prepare\n    from ..evaluate import stats\n")
    found = [t for node in ast.walk(tree) for t in _targets(node, "ember.tasks.base", False)]
    assert found == ["ember.recipe", "ember.evaluate.stats"]
    edge = Edge("ember/tasks/base.py", 2, "ember.tasks.base", "ember.recipe")
    assert upward(edge)
    assert str(edge) == "ember/tasks/base.py:2: ember.tasks.base imports ember.recipe (tasks -> recipe)"


@pytest.mark.parametrize(
    "source,target,ok",
    [
        ("ember.models.gpt", "ember.decoding.sampling", True),
        ("ember.tasks.seq2seq", "ember.metrics", True),
        ("ember.evaluate.report", "ember.deploy.bundle", True),  # stages may use each other
        ("ember.data.text", "ember.track", True),  # same layer
        ("ember.models.gpt", "ember.generative", False),
        ("ember.tasks.classification", "ember.evaluate.stats", False),
        ("ember.deploy.bundle", "ember.cli", False),
        ("ember.deploy.bundle", "ember", False),  # the top-level package imports everything
        ("ember", "ember.cli", True),
    ],
)
def test_the_order(source: str, target: str, ok: bool) -> None:
    assert upward(Edge("x.py", 1, source, target)) is not ok
