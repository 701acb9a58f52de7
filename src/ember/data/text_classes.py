"""A user's labelled texts: a CSV / Parquet / JSONL file with a text column, or a folder of .txt per class.

Loading gives a `TextFiles` bundle of the texts as read. The tokenizer is trained on the training
split only, once the recipe has split the rows (`TextFiles.fit`), or taken from a finished run's
``tokenizer.json``; every text is then cut or padded to ``max_len`` token ids, giving a
`~ember.data.text.TextClassBundle` that the encoder, the GPT classifier and the RNN train on.

Example:
    >>> from ember.data import load_dataset
    >>> bundle = load_dataset("text-classes", path="reviews.csv", text="review", target="stars")  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ember.data.bundle import ArrayData, DataBundle, DataError, existing_path
from ember.data.datasets import register_dataset
from ember.data.fingerprint import fingerprint
from ember.data.table import read_table
from ember.data.text import TextClassBundle, encode_padded
from ember.data.tokenizers import load_tokenizer, train_tokenizer

__all__ = ["TextFiles", "TextRows", "read_labelled_texts", "text_classes"]

TOKENIZER = "tokenizer.json"


@dataclass
class TextRows(Dataset):
    """Texts and their class ids, before tokenizing (``rows[i]`` is ``(text, class id)``)."""

    texts: list[str]
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor]:
        return self.texts[index], self.y[index]

    @property
    def targets(self) -> np.ndarray:
        return self.y.numpy()

    def fingerprint(self) -> str:
        joined = "\x1e".join(self.texts).encode("utf-8")
        return fingerprint(np.frombuffer(joined, dtype=np.uint8), self.y.numpy())


@dataclass
class TextFiles(DataBundle):
    """Labelled texts before tokenizing; `fit` trains the tokenizer on the training split and encodes."""

    tokenizer: str = "char"
    vocab_size: int = 4096
    max_len: int = 128

    def fit(self, train_index: np.ndarray | Sequence[int], saved: Path | None = None) -> TextClassBundle:
        """Train (or load) the tokenizer on the rows at ``train_index`` and encode every text.

        Args:
            train_index: the training split's rows.
            saved: a finished run's folder; its ``tokenizer.json`` is used instead of training one.
        """
        pool, test = self.train, self.test
        assert isinstance(pool, TextRows)
        if saved is not None and (saved / TOKENIZER).is_file():
            tok = load_tokenizer(saved / TOKENIZER)
        elif self.tokenizer in ("char", "bpe"):
            texts = [pool.texts[i] for i in np.asarray(train_index, dtype=np.int64)]
            tok = train_tokenizer(self.tokenizer, texts, vocab_size=self.vocab_size)
        else:
            tok = load_tokenizer(existing_path(self.tokenizer, "tokenizer file"))
        return TextClassBundle(
            train=ArrayData(encode_padded(tok, pool.texts, self.max_len), pool.y),
            test=ArrayData(encode_padded(tok, test.texts, self.max_len), test.y)
            if isinstance(test, TextRows)
            else None,
            num_classes=self.num_classes,
            classes=self.classes,
            input_shape=(self.max_len,),
            task="classification",
            name=self.name,
            tokenizer=tok,
        )


def read_labelled_texts(
    path: str | Path,
    *,
    text: str = "text",
    target: str = "label",
    pattern: str = "*.txt",
    encoding: str = "utf-8",
) -> tuple[list[str], list[str]]:
    """``(texts, labels)`` from a folder of class subfolders, a JSONL file, or a table file."""
    root = existing_path(path, "text data")
    if root.is_dir():
        classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        texts, labels = [], []
        for name in classes:
            for file in sorted(p for p in (root / name).rglob(pattern) if p.is_file()):
                try:
                    texts.append(file.read_text(encoding=encoding))
                except UnicodeDecodeError as e:
                    raise DataError(f"{file} is not {encoding} text ({e}); set data.encoding") from None
                labels.append(name)
        if not texts:
            raise DataError(f"{root} has no {pattern} files in class subfolders, e.g. {root}/positive/1.txt")
        return texts, labels
    if root.suffix.lower() in (".jsonl", ".ndjson"):
        return _read_jsonl(root, text, target)
    table = read_table(root)
    body, label = table.column(text, "text column"), table.column(target, "target column")
    pairs = [(t, lab) for t, lab in zip(body, label) if t is not None and lab is not None and lab == lab]
    if not pairs:
        raise DataError(f"{root} has no rows with both a '{text}' and a '{target}' value")
    return [str(t) for t, _ in pairs], [_label(lab) for _, lab in pairs]


def _read_jsonl(file: Path, text: str, target: str) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    with file.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{file}:{number} is not valid JSON: {e}") from None
            if not isinstance(record, dict) or not isinstance(record.get(text), str) or target not in record:
                raise DataError(
                    f"{file}:{number} needs a string '{text}' and a '{target}' (set data.text / data.target)"
                )
            texts.append(record[text])
            labels.append(_label(record[target]))
    if not texts:
        raise DataError(f"{file} has no records")
    return texts, labels


def _label(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


@register_dataset("text-classes")
def text_classes(
    path: str | Path,
    *,
    text: str = "text",
    target: str = "label",
    test_path: str | Path | None = None,
    tokenizer: str = "char",
    vocab_size: int = 4096,
    max_len: int = 128,
    pattern: str = "*.txt",
    encoding: str = "utf-8",
) -> TextFiles:
    """Labelled texts from files: a folder of class subfolders of ``.txt``, a JSONL, CSV or Parquet file.

    Args:
        path: ``folder/<class>/*.txt`` (each file one text), or a file with a text and a label column.
        text, target: the text column (JSONL field) and the label column of a file.
        test_path: an optional second folder or file, laid out the same, used as the test split.
        tokenizer: ``char``, ``bpe`` (trained on the training split only) or a tokenizer.json path.
        vocab_size: tokens a BPE tokenizer learns.
        max_len: tokens per text, ``<eos>`` included: longer texts are cut, shorter right-padded.
        pattern, encoding: which files of a folder are texts, and how they are decoded.
    """
    if max_len < 2:
        raise ValueError(f"max_len must be at least 2; got {max_len}")
    texts, labels = read_labelled_texts(path, text=text, target=target, pattern=pattern, encoding=encoding)
    parts = [(texts, labels)]
    if test_path is not None:
        parts.append(
            read_labelled_texts(test_path, text=text, target=target, pattern=pattern, encoding=encoding)
        )
    numeric = all(label.lstrip("-").isdigit() for label in labels)
    classes = sorted(set(labels), key=lambda s: (int(s), s) if numeric else (0, s))
    index = {name: i for i, name in enumerate(classes)}
    rows = []
    for part_texts, part_labels in parts:
        unknown = sorted(set(part_labels) - set(index))
        if unknown:
            raise DataError(f"the test labels {unknown[:5]} are none of the training classes {classes}")
        rows.append(
            TextRows(part_texts, torch.tensor([index[lab] for lab in part_labels], dtype=torch.int64))
        )
    return TextFiles(
        train=rows[0],
        test=rows[1] if len(rows) > 1 else None,
        num_classes=len(classes),
        classes=classes,
        input_shape=(max_len,),
        task="classification",
        name="text-classes",
        tokenizer=tokenizer,
        vocab_size=vocab_size,
        max_len=max_len,
    )
