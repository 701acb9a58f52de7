"""Synthetic personal data for testing detectors: valid-checksum cards and IBANs, e-mails, phones, IPs.

Every string is made from a seeded generator, so a planted set is the same on every machine. Cards
carry a correct Luhn digit and IBANs correct mod-97 check digits (so a detector that checks them
must accept them); formats vary (spaced, dashed, plain; national and international phones; IPv4
and IPv6). Used by the tests and ``benchmarks/pii.py``.

Example:
    >>> from ember.responsible.pii import find
    >>> kind, text = planted(5, seed=0)[0]
    >>> [f.kind for f in find(f"see {text} today")] == [kind]
    True
"""

from __future__ import annotations

import ipaddress

import numpy as np

from ember.responsible.pii import IBAN_LENGTHS, luhn

NAMES = ["alex", "sam", "maria", "jo", "lee", "chen", "fatima", "olu", "ivan", "noor"]
DOMAINS = ["example.org", "mail.example.com", "uni-hamburg.de", "corp.example.co.uk", "x.io"]


def card(rng: np.random.Generator) -> str:
    prefix, length, groups = [("4", 16, (4, 4, 4, 4)), ("51", 16, (4, 4, 4, 4)), ("37", 15, (4, 6, 5))][
        int(rng.integers(3))
    ]
    body = prefix + "".join(str(d) for d in rng.integers(0, 10, length - len(prefix) - 1))
    digits = next(body + str(c) for c in range(10) if luhn(body + str(c)))
    sep = ["", " ", "-"][int(rng.integers(3))]
    out, i = [], 0
    for g in groups:
        out.append(digits[i : i + g])
        i += g
    return sep.join(out)


def iban(rng: np.random.Generator) -> str:
    country = ["DE", "GB", "FR", "NL", "ES", "IT", "CH"][int(rng.integers(7))]
    n = IBAN_LENGTHS[country] - 4
    if country in ("GB", "NL"):
        bank = "".join(chr(65 + int(c)) for c in rng.integers(0, 26, 4))
        account = bank + "".join(str(d) for d in rng.integers(0, 10, n - 4))
    else:
        account = "".join(str(d) for d in rng.integers(0, 10, n))
    number = int("".join(str(int(c, 36)) for c in account + country + "00"))
    text = f"{country}{98 - number % 97:02d}{account}"
    if rng.random() < 0.5:
        text = " ".join(text[i : i + 4] for i in range(0, len(text), 4))
    return text


def _digits(rng: np.random.Generator, k: int) -> str:
    return "".join(str(int(x)) for x in rng.integers(0, 10, size=k))


def phone(rng: np.random.Generator) -> str:
    d = lambda k: _digits(rng, k)  # noqa: E731
    area = str(int(rng.integers(2, 10))) + d(2)
    forms = [
        f"({area}) {d(3)}-{d(4)}",
        f"{area}-{d(3)}-{d(4)}",
        f"{area}.{d(3)}.{d(4)}",
        f"+1 {area} {d(3)} {d(4)}",
        f"+44 20 {d(4)} {d(4)}",
        f"+49 30 {d(8)}",
        f"+33 1 {d(2)} {d(2)} {d(2)} {d(2)}",
    ]
    return forms[int(rng.integers(len(forms)))]


def email(rng: np.random.Generator) -> str:
    name = NAMES[int(rng.integers(len(NAMES)))]
    sep = ["", ".", "_", "+"][int(rng.integers(4))]
    tail = NAMES[int(rng.integers(len(NAMES)))] if sep else str(int(rng.integers(100)))
    return f"{name}{sep}{tail}@{DOMAINS[int(rng.integers(len(DOMAINS)))]}"


def ip(rng: np.random.Generator) -> str:
    if rng.random() < 0.7:
        return ".".join(str(int(x)) for x in rng.integers(0, 256, 4))
    return str(ipaddress.IPv6Address(int(rng.integers(0, 2**62)) << 64 | int(rng.integers(0, 2**16))))


MAKERS = {"EMAIL": email, "PHONE": phone, "CARD": card, "IBAN": iban, "IP": ip}


def planted(n: int, *, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` ``(kind, text)`` pairs, the kinds taking turns."""
    rng = np.random.default_rng(seed)
    kinds = list(MAKERS)
    return [(kinds[i % len(kinds)], MAKERS[kinds[i % len(kinds)]](rng)) for i in range(n)]


__all__ = ["MAKERS", "planted"]
