"""Parallel text for sequence-to-sequence models: sentence pairs, length-sorted batches, held-out groups.

A `PairData` holds every pair as token ids, the source ending in ``<eos>`` and the target wrapped
in ``<bos> … <eos>``, plus the group each pair belongs to (a verse's book). `PairLoader` batches
pairs of similar length together, right-padded with ``<pad>``, as ``(src, tgt)`` int64 tensors of
shape (B, S) and (B, T + 1): either ``batch_size`` pairs or as many as fit in ``max_tokens``
padded tokens. Batch composition is fixed once; each training epoch visits the batches in an
order seeded by (seed, epoch), so a resumed run sees the very same batches.

Data set ``en-es-verses`` (see `ember.data.verses`): 31,077 English–Spanish Bible verses. Its
validation and test parts are whole books (``val_books``, ``test_books``) that training never
sees, so a verse cannot leak into training through a near-copy in the same book; the byte-level
BPE shared by both languages is trained on the training books only.

Example:
    >>> from ember.data.tokenizers import CharTokenizer
    >>> tok = CharTokenizer.train(["abc", "xyz"])
    >>> data = PairData.encode(tok, ["ab", "abc"], ["xy", "z"], groups=[0, 1], max_len=16)
    >>> src, tgt = next(iter(PairLoader(data, batch_size=2, shuffle=False, pad_id=tok.pad_id)))
    >>> src.tolist(), tgt.tolist()
    ([[4, 5, 3, 0], [4, 5, 6, 3]], [[2, 7, 8, 3], [2, 9, 3, 0]])
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ember._io import atomic_folder
from ember.data.bundle import DataError
from ember.data.datasets import register_dataset
from ember.data.loader import batch_generator
from ember.data.sources import cache_dir
from ember.data.text import TextBundle
from ember.data.tokenizers import Tokenizer, load_tokenizer, train_tokenizer

__all__ = [
    "TEST_BOOKS",
    "VAL_BOOKS",
    "PairData",
    "PairLoader",
    "ParallelBundle",
    "group_splits",
    "parallel_bundle",
]

# held out by default: a mix of narrative, wisdom, gospel and letter, none with a parallel book
TEST_BOOKS = ("Josh", "Prov", "John", "1Cor")  # 2,889 verses
VAL_BOOKS = ("Ruth", "Jonah", "Amos", "Phil", "Jas")  # 490 verses


class PairData(Dataset):
    """Token-id pairs (source + ``<eos>``, ``<bos>`` + target + ``<eos>``) and the group of each.

    Args:
        src, tgt: one int32 array of token ids per pair, specials included.
        groups: the group id of each pair (int64), e.g. its book.
        rows: which pairs this split holds (default: all), in order.
    """

    def __init__(
        self,
        src: Sequence[np.ndarray],
        tgt: Sequence[np.ndarray],
        groups: np.ndarray,
        rows: np.ndarray | None = None,
    ) -> None:
        if not len(src) == len(tgt) == len(groups):
            raise DataError(f"{len(src)} sources, {len(tgt)} targets and {len(groups)} groups must match")
        self.src, self.tgt, self.groups = src, tgt, np.asarray(groups, dtype=np.int64)
        self.rows = np.arange(len(src)) if rows is None else np.asarray(rows, dtype=np.int64)

    @classmethod
    def encode(
        cls,
        tokenizer: Tokenizer,
        sources: Sequence[str],
        targets: Sequence[str],
        *,
        groups: Sequence[int] | np.ndarray,
        max_len: int,
    ) -> PairData:
        """Tokenize text pairs; a side longer than ``max_len`` tokens is cut (its ``<eos>`` kept)."""
        bos, eos = tokenizer.bos_id, tokenizer.eos_id
        if bos is None or eos is None:
            raise DataError("a sequence-to-sequence tokenizer needs <bos> and <eos> tokens")
        src = [np.asarray(tokenizer.encode(t)[: max_len - 1] + [eos], np.int32) for t in sources]
        tgt = [np.asarray([bos] + tokenizer.encode(t)[: max_len - 1] + [eos], np.int32) for t in targets]
        return cls(src, tgt, np.asarray(groups, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        row = int(self.rows[index])
        return torch.from_numpy(self.src[row]).long(), torch.from_numpy(self.tgt[row]).long()

    def subset(self, idx: np.ndarray | Sequence[int]) -> PairData:
        """The pairs at positions ``idx`` of this split (an entry of a split dict)."""
        return PairData(self.src, self.tgt, self.groups, self.rows[np.asarray(idx, dtype=np.int64)])

    def lengths(self) -> np.ndarray:
        """(N,) the longer side of each pair, in tokens (the target counted without ``<bos>``)."""
        return np.array([max(len(self.src[r]), len(self.tgt[r]) - 1) for r in self.rows], dtype=np.int64)

    def fingerprint(self) -> str:
        """sha256 of every pair's ids and group (the data identity of a run)."""
        digest = hashlib.sha256()
        for r in range(len(self.src)):
            digest.update(self.src[r].tobytes() + b"|" + self.tgt[r].tobytes() + b"|")
        digest.update(self.groups.tobytes())
        return digest.hexdigest()


class _Pairs(Dataset):
    """Row indices → one padded ``(src, tgt)`` batch (the loader's sampler yields whole batches)."""

    def __init__(self, data: PairData, pad_id: int) -> None:
        self.data, self.pad_id = data, pad_id

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.__getitems__([index])

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.data.rows[np.asarray(indices, dtype=np.int64)]
        return self._pad([self.data.src[r] for r in rows]), self._pad([self.data.tgt[r] for r in rows])

    def _pad(self, arrays: list[np.ndarray]) -> torch.Tensor:
        out = np.full((len(arrays), max(len(a) for a in arrays)), self.pad_id, dtype=np.int64)
        for i, a in enumerate(arrays):
            out[i, : len(a)] = a
        return torch.from_numpy(out)


def _as_batch(batch: Any) -> Any:
    return batch  # _Pairs already returns the whole batch


class _LengthBatches(Sampler[list[int]]):
    """Fixed batches of similar-length pairs; a seeded order of them per training epoch."""

    def __init__(self, data: PairData, *, batch_size: int, max_tokens: int, shuffle: bool, seed: int) -> None:
        if len(data) == 0:
            raise DataError("this split holds no pairs")
        lengths = data.lengths()
        # a seeded tie-break, so equal-length pairs do not always share a batch in data order
        jitter = np.random.default_rng(seed).random(len(lengths)) if shuffle else np.zeros(len(lengths))
        order = np.lexsort((jitter, lengths))
        self.batches: list[list[int]] = []
        current: list[int] = []
        for i in order.tolist():
            longest = int(lengths[i])  # pairs come shortest first: the newest is the longest
            full = len(current) >= batch_size if not max_tokens else (len(current) + 1) * longest > max_tokens
            if current and full:
                self.batches.append(current)
                current = []
            current.append(i)
        self.batches.append(current)
        self.shuffle, self.seed = shuffle, seed
        self.epoch, self.start_batch = 0, 0

    def __len__(self) -> int:
        return len(self.batches)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch must be in [0, {len(self)}]; got {start_batch}")
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self) -> Iterator[list[int]]:
        epoch, first = self.epoch, self.start_batch
        self.start_batch = 0  # a resume offset applies to one pass only
        order = (
            torch.randperm(len(self.batches), generator=batch_generator(self.seed, epoch, 0)).tolist()
            if self.shuffle
            else range(len(self.batches))
        )
        for number in list(order)[first:]:
            yield self.batches[number]
        self.epoch = epoch + 1


class PairLoader(DataLoader):
    """``(src, tgt)`` padded batches of a `PairData` split: (B, S) and (B, T + 1) int64.

    Args:
        data: the split.
        batch_size: pairs per batch (when ``max_tokens`` is 0).
        max_tokens: pairs per batch so that pairs x longest side stays within it (0: off).
        shuffle: visit the batches in a seeded random order each epoch (training).
        seed: that order's seed.
        pad_id: the padding id.
    """

    def __init__(
        self,
        data: PairData,
        *,
        batch_size: int = 64,
        max_tokens: int = 0,
        shuffle: bool,
        seed: int = 0,
        pad_id: int = 0,
    ) -> None:
        batches = _LengthBatches(
            data, batch_size=batch_size, max_tokens=max_tokens, shuffle=shuffle, seed=seed
        )
        super().__init__(
            _Pairs(data, pad_id),
            batch_sampler=batches,  # lists of indices, taken whole by _Pairs
            collate_fn=_as_batch,
        )
        self.batches = batches
        self.data = data  # the split's pairs

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Make the next pass epoch ``epoch``, from batch ``start_batch`` (to resume)."""
        self.batches.set_epoch(epoch, start_batch)


def group_splits(
    group_names: Sequence[str], groups: np.ndarray, *, val: Sequence[str], test: Sequence[str]
) -> dict[str, np.ndarray]:
    """Train / val / test example indices where val and test are the groups named (whole groups).

    Example:
        >>> group_splits(["a", "b", "c"], np.array([0, 0, 1, 2]), val=["b"], test=["c"])["train"].tolist()
        [0, 1]
    """
    index = {name: i for i, name in enumerate(group_names)}
    unknown = sorted((set(val) | set(test)) - set(index))
    if unknown:
        raise DataError(f"unknown groups {unknown}; the data has {list(group_names)}")
    if set(val) & set(test):
        raise DataError(f"groups {sorted(set(val) & set(test))} cannot be in both val and test")
    in_val = np.isin(groups, [index[g] for g in val])
    in_test = np.isin(groups, [index[g] for g in test])
    parts = {"train": np.flatnonzero(~in_val & ~in_test), "val": np.flatnonzero(in_val)}
    if len(test):
        parts["test"] = np.flatnonzero(in_test)
    return {name: idx.astype(np.int64) for name, idx in parts.items()}


@dataclass
class ParallelBundle(TextBundle):
    """A `TextBundle` of sentence pairs: ``train`` is the whole `PairData` pool, ``splits`` its parts.

    ``input_shape`` is ``(max_len,)``; a recipe fills a model's ``vocab_size``, ``max_len`` and
    ``pad_id`` from the tokenizer and uses ``splits`` as given (held-out groups) instead of drawing one.
    """

    splits: dict[str, np.ndarray] | None = None
    max_tokens: int = 0

    def loader(self, data: Any, *, batch_size: int, train: bool, seed: int = 0) -> PairLoader:  # type: ignore[override]
        """Seeded shuffled training batches (``train``) or length-sorted evaluation batches of ``data``."""
        if not isinstance(data, PairData):
            raise TypeError(f"a parallel bundle batches PairData splits; got {type(data).__name__}")
        pad = self.tokenizer.pad_id if self.tokenizer.pad_id is not None else 0
        return PairLoader(
            data,
            batch_size=batch_size,
            max_tokens=self.max_tokens if train else 0,
            shuffle=train,
            seed=seed,
            pad_id=pad,
        )


def _shared_tokenizer(name: str, texts: Sequence[str], tokenizer: str, vocab_size: int) -> Any:
    """A BPE (or char) tokenizer trained on ``texts``, or loaded from a path; BPE cached by content."""
    if tokenizer == "char":
        return train_tokenizer("char", texts)
    if tokenizer != "bpe":
        return load_tokenizer(tokenizer)
    digest = hashlib.sha256(f"bpe:{vocab_size}".encode())
    for text in texts:
        digest.update(hashlib.sha256(text.encode("utf-8")).digest())
    folder = cache_dir() / "tokenized" / f"{name}-{digest.hexdigest()[:20]}"
    if (folder / "tokenizer.json").is_file():
        return load_tokenizer(folder / "tokenizer.json")
    tok = train_tokenizer("bpe", texts, vocab_size=vocab_size)
    with atomic_folder(folder) as work:  # the cache entry appears whole or not at all
        tok.save(work / "tokenizer.json")
    return tok


def parallel_bundle(
    name: str,
    sources: Sequence[str],
    targets: Sequence[str],
    group_names: Sequence[str],
    groups: np.ndarray,
    *,
    val_groups: Sequence[str],
    test_groups: Sequence[str],
    tokenizer: str = "bpe",
    vocab_size: int = 8000,
    max_len: int = 256,
    max_tokens: int = 0,
) -> ParallelBundle:
    """Sentence pairs → a `ParallelBundle` with whole groups held out and one tokenizer for both sides.

    Args:
        name: the data set's name (names the tokenizer cache).
        sources, targets: the texts, one pair per index.
        group_names: the name of each group id; ``groups``: the group id of each pair.
        val_groups, test_groups: the groups held out for validation and test.
        tokenizer: ``bpe`` (byte-level, trained on the training pairs of both sides), ``char``, or
            the path of a saved tokenizer.json.
        vocab_size: BPE tokens (specials and the 256 bytes included).
        max_len: longest side in tokens (longer ones are cut); the model's ``max_len``.
        max_tokens: training batches by padded-token budget instead of ``batch_size`` (0: off).
    """
    if len(sources) != len(targets) or len(sources) != len(groups):
        raise DataError(f"{len(sources)} sources, {len(targets)} targets and {len(groups)} groups must match")
    splits = group_splits(group_names, groups, val=val_groups, test=test_groups)
    train_rows = splits["train"]
    texts = [sources[i] for i in train_rows] + [targets[i] for i in train_rows]
    tok = _shared_tokenizer(name, texts, tokenizer, vocab_size)
    data = PairData.encode(tok, sources, targets, groups=groups, max_len=max_len)
    return ParallelBundle(
        train=data,
        test=None,
        num_classes=tok.vocab_size,
        classes=list(group_names),
        input_shape=(max_len,),
        task="seq2seq",
        name=name,
        tokenizer=tok,
        block_size=max_len,
        splits=splits,
        max_tokens=max_tokens,
    )


@register_dataset("en-es-verses")
def en_es_verses(
    *,
    source: str = "en",
    tokenizer: str = "bpe",
    vocab_size: int = 8000,
    max_len: int = 256,
    max_tokens: int = 0,
    val_books: Sequence[str] = VAL_BOOKS,
    test_books: Sequence[str] = TEST_BOOKS,
    progress: bool = True,
) -> ParallelBundle:
    """English–Spanish Bible verses (31,077 pairs); whole books held out for validation and test.

    Args:
        source: the language translated from, ``en`` (into Spanish) or ``es`` (into English).
        val_books, test_books: OSIS book names held out (see `VAL_BOOKS`, `TEST_BOOKS`).
        progress: a download bar on a terminal. Other options as `parallel_bundle`.
    """
    from ember.data.verses import verse_pairs

    if source not in ("en", "es"):
        raise ValueError(f"source must be 'en' or 'es'; got {source!r}")
    pairs = verse_pairs(progress=progress)
    books = list(dict.fromkeys(p.book for p in pairs))
    index = {book: i for i, book in enumerate(books)}
    en, es = [p.en for p in pairs], [p.es for p in pairs]
    return parallel_bundle(
        "en-es-verses" if source == "en" else "es-en-verses",
        en if source == "en" else es,
        es if source == "en" else en,
        books,
        np.array([index[p.book] for p in pairs], dtype=np.int64),
        val_groups=list(val_books),
        test_groups=list(test_books),
        tokenizer=tokenizer,
        vocab_size=vocab_size,
        max_len=max_len,
        max_tokens=max_tokens,
    )
