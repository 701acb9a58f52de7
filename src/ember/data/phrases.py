"""Phrases that name a class ("a handwritten seven", "an ankle boot"), for text-conditioned generation
and captioning on labelled image data.

A `PhraseSet` holds, for each class, the words that name it (``seven`` and ``7``), templates used in
training and *held-out* templates: paraphrases never seen in training, with which a text-conditioned
model is tested. Its vocabulary is the words of its training phrases plus four specials; a word
outside it (one a held-out paraphrase brings) reads as ``<unk>``.

Example:
    >>> digits = PHRASE_SETS["digits"]
    >>> digits.phrases(7)[:3]
    ['seven', '7', 'a seven']
    >>> digits.classify("a handwritten 7"), digits.classify("a shoe")
    (7, None)
    >>> digits.decode(digits.encode("the digit seven written by hand"))
    'the digit seven <unk> <unk> <unk>'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD, BOS, EOS, UNK = 0, 1, 2, 3

__all__ = ["BOS", "EOS", "PAD", "PHRASE_SETS", "UNK", "PhraseSet", "phrase_set"]


def _article(name: str) -> str:
    if name in {"trousers", "pants"}:
        return f"a pair of {name}"
    return f"an {name}" if name[0] in "aeio8" or name in {"18", "11"} else f"a {name}"


@dataclass(frozen=True)
class PhraseSet:
    """Class names and phrase templates; ``{x}`` in a template is a name, ``{a_x}`` the name with its
    article ("an eight", "a pair of trousers")."""

    name: str
    """The set's name (a key of ``PHRASE_SETS``)."""
    names: tuple[tuple[str, ...], ...]
    """For each class, the words that name it."""
    train_templates: tuple[str, ...]
    """Templates of the phrases a model trains on."""
    heldout_templates: tuple[str, ...]
    """Paraphrases kept out of training (and of the vocabulary's sources)."""
    vocabulary: tuple[str, ...] = field(init=False)
    """The specials, then every word of the training phrases, sorted."""

    def __post_init__(self) -> None:
        words = {w for label in range(len(self.names)) for p in self.phrases(label) for w in p.split()}
        object.__setattr__(self, "vocabulary", SPECIALS + tuple(sorted(words)))

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    def phrases(self, label: int, split: Literal["train", "heldout"] = "train") -> list[str]:
        """Every phrase of ``split`` for class ``label``: each template with each of its names."""
        templates = self.train_templates if split == "train" else self.heldout_templates
        return [t.format(x=n, a_x=_article(n)) for t in templates for n in self.names[label]]

    def classify(self, text: str) -> int | None:
        """The class a phrase names, or None when it names none or several."""
        padded = f" {' '.join(text.lower().split())} "
        found = {label for label, names in enumerate(self.names) for n in names if f" {n} " in padded}
        return found.pop() if len(found) == 1 else None

    def encode(self, text: str) -> list[int]:
        """Word ids of ``text`` (lower-cased, split on spaces); unknown words are ``<unk>``."""
        index = {w: i for i, w in enumerate(self.vocabulary)}
        return [index.get(w, UNK) for w in text.lower().split()]

    def decode(self, ids: Sequence[int]) -> str:
        """The words of ``ids``, stopping at ``<eos>``; ``<pad>`` and ``<bos>`` are dropped."""
        words = []
        for i in ids:
            if i == EOS:
                break
            if i not in (PAD, BOS):
                words.append(self.vocabulary[i])
        return " ".join(words)

    def batch(
        self, texts: Sequence[str], *, bos_eos: bool = False, length: int | None = None
    ) -> torch.Tensor:
        """(B, L) int64 ids of ``texts``, right-padded with ``<pad>`` (optionally in <bos> .. <eos>)."""
        rows = [([BOS] if bos_eos else []) + self.encode(t) + ([EOS] if bos_eos else []) for t in texts]
        width = length or max((len(r) for r in rows), default=1)
        out = torch.full((len(rows), max(width, 1)), PAD, dtype=torch.long)
        for i, row in enumerate(rows):
            out[i, : min(len(row), width)] = torch.tensor(row[:width], dtype=torch.long)
        return out

    def table(self, *, bos_eos: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Every training phrase as ids, grouped by class: ``(K, P, L)`` ids and ``(K,)`` phrase counts
        (classes with fewer phrases are padded with rows of ``<pad>``)."""
        per_class = [self.phrases(k) for k in range(self.num_classes)]
        counts = torch.tensor([len(p) for p in per_class])
        length = max(len(p.split()) for ps in per_class for p in ps) + (2 if bos_eos else 0)
        out = torch.full((self.num_classes, int(counts.max()), length), PAD, dtype=torch.long)
        for k, phrases in enumerate(per_class):
            out[k, : len(phrases)] = self.batch(phrases, bos_eos=bos_eos, length=length)
        return out, counts


DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

PHRASE_SETS: dict[str, PhraseSet] = {
    "digits": PhraseSet(
        name="digits",
        names=tuple((word, str(i)) for i, word in enumerate(DIGIT_WORDS)),
        train_templates=(
            "{x}",
            "{a_x}",
            "a handwritten {x}",
            "the digit {x}",
            "the number {x}",
            "a handwritten digit {x}",
            "{a_x} drawn in ink",
            "a sketch of the digit {x}",
        ),
        heldout_templates=(
            "{a_x} written by hand",
            "a picture of the number {x}",
            "handwritten number {x}",
            "an image showing {a_x}",
        ),
    ),
    "fashion": PhraseSet(
        name="fashion",
        names=(
            ("t-shirt", "top"),
            ("trousers", "pants"),
            ("pullover", "sweater"),
            ("dress",),
            ("coat",),
            ("sandal",),
            ("shirt",),
            ("sneaker",),
            ("bag",),
            ("ankle boot",),
        ),
        train_templates=(
            "{x}",
            "{a_x}",
            "a photo of {a_x}",
            "a picture of {a_x}",
            "{a_x} on a dark background",
            "a product shot of {a_x}",
        ),
        heldout_templates=(
            "an image showing {a_x}",
            "a catalog photo of {a_x}",
            "{a_x} photographed from above",
        ),
    ),
}


def phrase_set(name: str) -> PhraseSet:
    """The phrase set ``name`` (``digits`` or ``fashion``); an unknown name is an error listing them."""
    try:
        return PHRASE_SETS[name]
    except KeyError:
        raise ValueError(f"unknown phrase set '{name}'; expected one of {', '.join(PHRASE_SETS)}") from None
