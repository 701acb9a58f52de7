"""Name patterns over a model's parameters and modules (freezing, per-group learning rates, LoRA).

A pattern is an ``fnmatch`` pattern on dotted names (``blocks.*.attn.qkv``, ``*.bias``), and a
pattern that names a module also covers everything inside it: ``blocks.0`` matches
``blocks.0.attn.qkv.weight``. A pattern that matches nothing is an error that says which names
are close, so a typo never silently freezes (or trains) nothing.

Example:
    >>> matches("blocks.0.attn.qkv.weight", "blocks.0")
    True
    >>> select(["head.weight", "blocks.0.mlp.fc.weight"], ["head.*"], "freeze pattern")
    ['head.weight']
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

from ember._registry import did_you_mean


def matches(name: str, pattern: str) -> bool:
    """Whether ``name`` matches ``pattern`` itself, or lies under a module the pattern names."""
    return fnmatchcase(name, pattern) or fnmatchcase(name, pattern + ".*")


def matching(names: Sequence[str], patterns: Sequence[str]) -> list[str]:
    """The names that match any of ``patterns``, in their order (no error when none do)."""
    return [name for name in names if any(matches(name, p) for p in patterns)]


def check_patterns(names: Sequence[str], patterns: Sequence[str], what: str, *, among: str = "name") -> None:
    """Raise ValueError for the first pattern matching none of ``names``, with a close one if any.

    ``what`` names the pattern (``freeze pattern``), ``among`` what it should match (``parameter``).
    """
    for pattern in patterns:
        if not any(matches(name, pattern) for name in names):
            prefixes = {n.rsplit(".", k)[0] for n in names for k in range(n.count(".") + 1)}
            candidates = sorted(prefixes | {p + ".*" for p in prefixes})
            shown = ", ".join(sorted({n.split(".")[0] for n in names})[:12]) or "(none)"
            raise ValueError(
                f"{what} '{pattern}' matches no {among}{did_you_mean(pattern, candidates) or '.'} "
                f"The {among}s' names start with: {shown}."
            )


def select(names: Sequence[str], patterns: Sequence[str], what: str, *, among: str = "name") -> list[str]:
    """The names matching any of ``patterns``; a pattern that matches none is a ValueError naming it."""
    check_patterns(names, patterns, what, among=among)
    return matching(names, patterns)
