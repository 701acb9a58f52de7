"""A content-safety layer for generated text: blocklist, patterns, an optional classifier; block, mask or flag.

:class:`ContentFilter` checks a text and answers with a :class:`Verdict`: the flags raised (``blocklist``,
``pii``, ``pattern:<name>``, ``classifier``) and the text to show, which depends on the action:

- ``flag``: the text as it is, with its flags (for logs and ``/metrics``);
- ``mask``: blocklisted words and personal data replaced (``****``, ``[EMAIL]`` ...);
- ``block``: nothing, when anything was flagged (the whole text withheld).

The blocklist matches whole words, case-insensitively. The optional classifier is
``alt-profanity-check`` (its model ships inside its wheel; ``pip install alt-profanity-check``),
flagging above ``classifier_threshold``; when asked for and missing, the filter says how to install
it rather than run without it.

Example:
    >>> f = ContentFilter(blocklist=["darn"], action="mask")
    >>> v = f.check("Darn, mail me at jo@example.org")
    >>> v.text, v.flags
    ('****, mail me at [EMAIL]', ['blocklist', 'pii'])
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ember.responsible import pii

Action = Literal["flag", "mask", "block"]
ACTIONS = ("flag", "mask", "block")

DEFAULT_BLOCKLIST = ("fuck", "fucking", "shit", "bitch", "cunt", "motherfucker", "asshole", "bastard")
"""A short default list of profanity; pass your own list or file for a real deployment."""

DEFAULT_PATTERNS = {
    "self-harm": r"\b(?:how to|ways to|best way to)\s+(?:kill|hurt|harm)\s+(?:myself|yourself)\b",
    "weapons": r"\bhow to (?:make|build) (?:a )?(?:bomb|explosive|pipe bomb|nerve agent)\b",
}


@dataclass
class Verdict:
    """The filter's answer for one text."""

    text: str | None
    flags: list[str] = field(default_factory=list)
    blocked: bool = False


class ContentFilter:
    """Checks generated text (see the module docstring).

    Args:
        blocklist: words (or a file with one per line); default :data:`DEFAULT_BLOCKLIST`.
        patterns: ``{name: regex}`` of content to flag; default :data:`DEFAULT_PATTERNS`.
        pii: also flag (and mask) personal data found by :mod:`ember.responsible.pii`.
        classifier: ``profanity-check`` to add alt-profanity-check's model, None for none.
        action: ``flag``, ``mask`` or ``block``.
    """

    def __init__(
        self,
        *,
        blocklist: Iterable[str] | str | Path | None = None,
        patterns: dict[str, str] | None = None,
        pii: bool = True,
        classifier: str | None = None,
        classifier_threshold: float = 0.8,
        action: Action = "flag",
    ) -> None:
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, got {action!r}")
        words = _words(blocklist)
        self.blocklist = (
            re.compile(r"\b(?:" + "|".join(map(re.escape, words)) + r")\b", re.I) if words else None
        )
        self.patterns = {
            k: re.compile(v, re.I) for k, v in (DEFAULT_PATTERNS if patterns is None else patterns).items()
        }
        self.pii = pii
        self.action = action
        self.threshold = classifier_threshold
        self.classifier = _classifier(classifier) if classifier else None

    def check(self, text: str) -> Verdict:
        """Flags for ``text`` and the text to show under this filter's action."""
        flags: list[str] = []
        shown = text
        if self.blocklist is not None and self.blocklist.search(text):
            flags.append("blocklist")
            shown = self.blocklist.sub(lambda m: "*" * len(m.group()), shown)
        if self.pii:
            masked, found = pii.redact(shown)
            if found:
                flags.append("pii")
                shown = masked
        flags += [f"pattern:{name}" for name, rx in self.patterns.items() if rx.search(text)]
        if self.classifier is not None and float(self.classifier([text])[0]) >= self.threshold:
            flags.append("classifier")
        if self.action == "block" and flags:
            return Verdict(None, flags, blocked=True)
        if self.action == "mask":
            if any(f.startswith(("pattern:", "classifier")) for f in flags):
                return Verdict(None, flags, blocked=True)  # whole-text findings cannot be masked word by word
            return Verdict(shown, flags)
        return Verdict(text, flags)


def _words(blocklist: Iterable[str] | str | Path | None) -> list[str]:
    if blocklist is None:
        return list(DEFAULT_BLOCKLIST)
    if isinstance(blocklist, str | Path):
        path = Path(blocklist)
        if not path.is_file():
            raise FileNotFoundError(f"blocklist file {path} does not exist (one word or phrase per line)")
        return [w.strip() for w in path.read_text().splitlines() if w.strip() and not w.startswith("#")]
    return [w for w in blocklist if w]


def _classifier(name: str):
    if name != "profanity-check":
        raise ValueError(f"unknown content classifier {name!r}; known: profanity-check")
    try:
        from profanity_check import predict_prob
    except ImportError:
        raise ImportError("the profanity-check classifier needs: pip install alt-profanity-check") from None
    return predict_prob


__all__ = ["ACTIONS", "DEFAULT_BLOCKLIST", "ContentFilter", "Verdict"]
