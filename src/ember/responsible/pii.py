"""Personal data in text: found by patterns that check themselves, masked, counted in a report.

Kinds found without any model: ``EMAIL``; ``PHONE`` (North American and international numbers
written with separators or a leading +, 10 to 15 digits); ``CARD`` (13 to 19 digits, spaced or
dashed in groups, passing the Luhn check); ``IBAN`` (country code, check digits and account,
passing ISO 13616's mod-97 check); ``IP`` (IPv4 with every octet <= 255, IPv6 as Python's
``ipaddress`` accepts it). Every candidate a pattern proposes is validated before it counts, which
is what keeps false flags on ordinary prose rare (``benchmarks/pii.py``: the clean Brown corpus).

``PERSON`` names need a named-entity model: ``ner="spacy"`` uses spaCy with an installed English
pipeline (``en_core_web_sm``); when spaCy or the model is missing, :func:`find` raises
:class:`NerUnavailableError` with the line to install it (no download is attempted).

Example:
    >>> clean, found = redact("Mail jo@example.org or call +1 (415) 555-0134; card 4111 1111 1111 1111.")
    >>> clean
    'Mail [EMAIL] or call [PHONE]; card [CARD].'
    >>> [f.kind for f in found]
    ['EMAIL', 'PHONE', 'CARD']
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

KINDS = ("EMAIL", "PHONE", "CARD", "IBAN", "IP", "PERSON")

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24}\b")
CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?!\d|\.\d)")
IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
PHONE = re.compile(
    r"(?<![\w+])(?:"
    r"\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}"  # +44 20 7946 0958
    r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}"  # (415) 555-0134
    r"|\d{3}[.-]\d{3}[.-]\d{4}"  # 415-555-0134
    r")(?![\w])"
)
IBAN_LENGTHS = {
    "AD": 24, "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "EE": 20,
    "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GR": 27, "HR": 21, "HU": 28, "IE": 22, "IS": 26, "IT": 27,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MT": 31, "NL": 18, "NO": 15, "PL": 28, "PT": 25,
    "RO": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TR": 26,
}  # fmt: skip


class NerUnavailableError(RuntimeError):
    """Names were asked for, but no named-entity model can be loaded here."""


@dataclass(frozen=True)
class Found:
    """One piece of personal data: its kind and where it is (``text[start:end]``)."""

    kind: str
    start: int
    end: int
    text: str


def luhn(digits: str) -> bool:
    """The Luhn checksum of a digit string (card numbers)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_valid(text: str) -> bool:
    """ISO 13616: known country length and ``int(rearranged) % 97 == 1``."""
    s = text.replace(" ", "").upper()
    if IBAN_LENGTHS.get(s[:2]) not in (None, len(s)) or not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    number = "".join(str(int(c, 36)) for c in moved)
    return int(number) % 97 == 1


def _cards(text: str) -> Iterable[Found]:
    for m in CARD.finditer(text):
        raw, start = m.group(), m.start()
        while raw:  # the pattern may have started in a number just before: try from each later group
            if _card_like(raw):
                yield Found("CARD", start, start + len(raw), raw)
                break
            cut = re.search(r"[ -]", raw)
            if cut is None:
                break
            start += cut.end()
            raw = raw[cut.end() :]


def _card_like(raw: str) -> bool:
    digits = re.sub(r"[ -]", "", raw)
    groups = re.split(r"[ -]", raw)
    if not 13 <= len(digits) <= 19 or not luhn(digits) or len(set(digits)) == 1:
        return False
    return len(groups) == 1 or all(2 <= len(g) <= 6 for g in groups)  # grouped as cards are printed


def _ibans(text: str) -> Iterable[Found]:
    for m in IBAN.finditer(text):
        raw = m.group().rstrip()
        while len(raw.replace(" ", "")) >= 15:  # the pattern may have run into a following capitalized word
            if iban_valid(raw):
                yield Found("IBAN", m.start(), m.start() + len(raw), raw)
                break
            raw = raw[:-1].rstrip()


def _ips(text: str) -> Iterable[Found]:
    for m in IPV4.finditer(text):
        parts = m.group().split(".")
        if all(int(p) <= 255 and (p == "0" or not p.startswith("0")) for p in parts):
            yield Found("IP", m.start(), m.end(), m.group())
    for m in IPV6.finditer(text):
        raw = m.group()
        if sum(1 for g in raw.split(":") if g) >= 3:  # "Section 2::" and "3:20::" are not addresses
            try:
                ipaddress.IPv6Address(raw)
            except ValueError:
                continue
            yield Found("IP", m.start(), m.end(), raw)


def _phones(text: str) -> Iterable[Found]:
    for m in PHONE.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 10 <= len(digits) <= 15:
            yield Found("PHONE", m.start(), m.end(), m.group())


def _emails(text: str) -> Iterable[Found]:
    for m in EMAIL.finditer(text):
        yield Found("EMAIL", m.start(), m.end(), m.group())


FINDERS: dict[str, Callable[[str], Iterable[Found]]] = {
    "EMAIL": _emails,
    "IBAN": _ibans,
    "CARD": _cards,
    "IP": _ips,
    "PHONE": _phones,
}
"""In order of precedence: where two overlap, the earlier kind keeps the span."""


def _spacy_names(text: str, model: str = "en_core_web_sm") -> Iterable[Found]:
    nlp = _load_spacy(model)
    for ent in nlp(text).ents:
        if ent.label_ == "PERSON":
            yield Found("PERSON", ent.start_char, ent.end_char, ent.text)


_NLP: dict[str, Any] = {}


def _load_spacy(model: str) -> Any:
    if model in _NLP:
        return _NLP[model]
    try:
        import spacy
    except ImportError:
        raise NerUnavailableError(
            "names need a named-entity model: pip install spacy, then install an English pipeline "
            f"({model}); or leave --ner off to find the other kinds"
        ) from None
    try:
        _NLP[model] = spacy.load(model)
    except OSError:
        raise NerUnavailableError(
            f"spaCy is installed but its model '{model}' is not (nothing is downloaded here): install the "
            "package of an English pipeline, or leave --ner off"
        ) from None
    return _NLP[model]


def find(text: str, *, kinds: Iterable[str] | None = None, ner: str | None = None) -> list[Found]:
    """Every piece of personal data in ``text``, in order, overlaps resolved by :data:`FINDERS` order.

    Args:
        kinds: the kinds to look for (default all but PERSON, plus PERSON when ``ner`` is set).
        ner: ``spacy`` to also find names (see the module docstring), None for patterns only.
    """
    wanted = set(kinds) if kinds is not None else set(FINDERS) | ({"PERSON"} if ner else set())
    unknown = wanted - set(KINDS)
    if unknown:
        raise ValueError(f"unknown PII kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    candidates = [f for kind, finder in FINDERS.items() if kind in wanted for f in finder(text)]
    if "PERSON" in wanted:
        if ner != "spacy":
            raise NerUnavailableError("PERSON needs a named-entity backend: ner='spacy' (pip install spacy)")
        candidates += list(_spacy_names(text))
    taken: list[Found] = []
    for f in candidates:  # precedence order: a later kind never splits an earlier one's span
        if all(f.end <= t.start or f.start >= t.end for t in taken):
            taken.append(f)
    return sorted(taken, key=lambda f: f.start)


def redact(
    text: str, *, kinds: Iterable[str] | None = None, ner: str | None = None
) -> tuple[str, list[Found]]:
    """``text`` with every piece of personal data replaced by ``[KIND]``, and what was found."""
    found = find(text, kinds=kinds, ner=ner)
    out, last = [], 0
    for f in found:
        out += [text[last : f.start], f"[{f.kind}]"]
        last = f.end
    out.append(text[last:])
    return "".join(out), found


@dataclass
class RedactionReport:
    """Counts over a whole data set: records seen and changed, finds per kind."""

    records: int = 0
    changed: int = 0
    strings: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, found: list[Found], *, keep: int = 3) -> None:
        for f in found:
            self.counts[f.kind] += 1
            shown = self.examples.setdefault(f.kind, [])
            if len(shown) < keep:
                shown.append(_hint(f.text))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (examples are masked: first and last character only)."""
        return {
            "records": self.records,
            "changed": self.changed,
            "strings": self.strings,
            "found": dict(self.counts),
            "examples": self.examples,
        }


def _hint(text: str) -> str:
    return text[0] + "…" + text[-1] if len(text) > 2 else "…"


def redact_record(
    record: Any, report: RedactionReport, *, fields: set[str] | None = None, ner: str | None = None
) -> Any:
    """A JSON value with its strings redacted (only under ``fields`` keys when given), counted in ``report``."""
    if isinstance(record, str):
        clean, found = redact(record, ner=ner)
        report.strings += 1
        report.add(found)
        return clean
    if isinstance(record, list):
        return [redact_record(v, report, fields=fields, ner=ner) for v in record]
    if isinstance(record, dict):
        return {
            k: redact_record(v, report, fields=None, ner=ner) if fields is None or k in fields else v
            for k, v in record.items()
        }
    return record


__all__ = [
    "KINDS",
    "Found",
    "NerUnavailableError",
    "RedactionReport",
    "find",
    "iban_valid",
    "luhn",
    "redact",
    "redact_record",
]
