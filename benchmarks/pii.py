"""PII detection: recall on 1,000 planted strings, false flags per 100,000 tokens of clean Brown.

The Brown corpus (1961 American English, 1.16 M tokens; ``ember data get brown``, read from the
cache) holds no e-mail addresses, card numbers, IBANs or IP addresses, and its few phone-like
numbers are not personal data of today: every find in it is counted as a false flag. The planted
set (``ember.responsible.pii_samples.planted``: 200 each of e-mail, phone, card, IBAN, IP, seeded)
is inserted one string per sentence at a random word position of randomly chosen Brown sentences;
a planted string counts as found when a find of the right kind covers exactly its characters.

    python benchmarks/pii.py
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
from _common import machine, table

from ember.data.brown import brown_documents
from ember.responsible.pii import find
from ember.responsible.pii_samples import planted


def main() -> None:
    print(machine())
    sentences = [s for doc in brown_documents(progress=False) for para in doc.paragraphs for s in para]
    tokens = sum(len(s.split()) for s in sentences)
    started = time.perf_counter()
    flags = [(f, s) for s in sentences for f in find(s)]
    seconds = time.perf_counter() - started
    kinds = Counter(f.kind for f, _ in flags)
    print(f"clean Brown: {len(sentences)} sentences, {tokens} tokens, {len(flags)} flags in {seconds:.1f} s")
    for f, s in flags[:20]:
        print(f"  flag {f.kind}: {f.text!r} in {s[:100]!r}")
    rng = np.random.default_rng(0)
    found, by_kind, total = 0, Counter(), Counter()
    for kind, text in planted(1000, seed=0):
        words = sentences[int(rng.integers(len(sentences)))].split()
        at = int(rng.integers(len(words) + 1))
        before = " ".join(words[:at])
        sentence = " ".join(w for w in (before, text, " ".join(words[at:])) if w)
        start = len(before) + (1 if before else 0)
        hit = any(f.kind == kind and f.start == start and f.end == start + len(text) for f in find(sentence))
        found += hit
        by_kind[kind] += hit
        total[kind] += 1
        if not hit:
            print(f"  missed {kind}: {text!r} in {sentence[:120]!r}")
    rows = [[k, f"{by_kind[k]}/{total[k]}", f"{kinds.get(k, 0)}"] for k in total]
    rows.append(
        [
            "all",
            f"{found}/1000 ({found / 10:.1f}%)",
            f"{len(flags)} ({len(flags) / tokens * 1e5:.2f} per 100k tokens)",
        ]
    )
    print(table(["kind", "planted found", "false flags on clean Brown"], rows))


if __name__ == "__main__":
    main()
