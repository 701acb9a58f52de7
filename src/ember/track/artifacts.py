"""Sealed archives: the content-addressed file format of bundles and of the model registry's blobs.

An archive is an uncompressed zip of flat, named files plus ``manifest.json`` (the sha256 and size of
every other file) and a seal in the zip comment (the sha256 of every byte before it). Equal files
give byte-identical archives (fixed member times and order), so an archive's own sha256 names its
content, which is how the model registry stores it. Reading verifies the seal, the manifest and
every file; damage is reported with the file or the byte it hit. The format knows nothing of models:
``ember.deploy.bundle`` gives the files their meaning, ``ember.track.registry`` stores them.

Example:
    >>> data = pack_archive({"meta.json": b"{}"}, kind="ember-bundle")
    >>> archive = read_archive(data)
    >>> archive.manifest["format"], sorted(archive.files)
    ('ember-bundle', ['meta.json'])
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["MANIFEST", "Archive", "ArchiveError", "pack_archive", "read_archive"]

MANIFEST = "manifest.json"
SEAL_PREFIX = b"ember-sealed/1 sha256="
SEAL_LEN = len(SEAL_PREFIX) + 64
_MEMBER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # whole names only (fullmatch)
MAX_MANIFEST = 1 << 20
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so equal files give byte-identical archives


class ArchiveError(ValueError):
    """A sealed archive that is damaged or malformed; the message names the file inside it."""


@dataclass
class Archive:
    """A verified sealed archive: its manifest and the bytes of every other file."""

    manifest: dict[str, Any]
    files: dict[str, bytes]
    sha256: str


def pack_archive(files: dict[str, bytes], *, kind: str, version: int = 1) -> bytes:
    """The bytes of a sealed archive holding ``files`` plus a ``manifest.json`` describing them.

    Args:
        files: flat names (``[A-Za-z0-9][A-Za-z0-9._-]*``) to contents; not ``manifest.json``.
        kind: the format name written into the manifest (``"ember-bundle"``).
        version: the format version written into the manifest.

    Returns:
        The archive: deterministic (equal inputs give equal bytes), uncompressed, sealed.
    """
    for name in files:
        if name == MANIFEST or not _MEMBER.fullmatch(name):
            raise ArchiveError(f"cannot store '{name}' in an archive: use a flat name like 'meta.json'")
    manifest = {
        "format": kind,
        "format_version": version,
        "files": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            for name, data in sorted(files.items())
        },
    }
    members = {MANIFEST: (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()}
    members.update(sorted(files.items()))
    return _zip(members)


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
        zf.comment = b"\0" * SEAL_LEN  # the placeholder keeps the end record's comment length right
    body = buf.getvalue()[:-SEAL_LEN]
    return body + SEAL_PREFIX + hashlib.sha256(body).hexdigest().encode()


def read_archive(source: Path | bytes, *, what: str = "archive") -> Archive:
    """Read and verify a sealed archive: the seal, every file's sha256 and size, no stray files.

    Args:
        source: a path, or the archive's bytes.
        what: how errors call it (``"bundle digits.ember"``).

    Returns:
        The :class:`Archive`; nothing in it is executed or unpickled.

    Raises:
        ArchiveError: naming the damaged file inside the archive (or the zip structure around it).
    """
    data = Path(source).read_bytes() if isinstance(source, str | Path) else bytes(source)
    seal = data[-SEAL_LEN:]
    if len(data) <= SEAL_LEN or not seal.startswith(SEAL_PREFIX):
        raise ArchiveError(
            f"{what} is not a sealed ember archive: no seal at its end (truncated, damaged, or not a bundle)"
        )
    body = data[:-SEAL_LEN]
    sealed = hashlib.sha256(body).hexdigest().encode() == seal[len(SEAL_PREFIX) :]
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except Exception as e:  # a flipped byte can surface as many exception types
        raise ArchiveError(f"{what}: its zip directory is damaged ({e})") from None
    # Nothing is decompressed or read beyond what the manifest declares: sizes and methods are
    # checked from the zip directory first (a zip bomb declares small and inflates large).
    names = [info.filename for info in infos]
    for info in infos:
        name = info.filename
        if not _MEMBER.fullmatch(name) or names.count(name) > 1:
            raise ArchiveError(f"{what} holds a file named {name!r}; only flat, unique names are allowed")
        if info.compress_type != zipfile.ZIP_STORED:
            raise ArchiveError(
                f"{what}: file '{name}' is compressed (zip method {info.compress_type}); this format "
                "stores every file uncompressed, so the archive was not written by ember. Refused unread."
            )
        if info.file_size != info.compress_size or info.file_size > len(data):
            raise ArchiveError(
                f"{what}: file '{name}' declares {info.file_size} bytes in {info.compress_size} stored "
                f"(the archive has {len(data)}); refused unread"
            )
    if MANIFEST not in names:
        raise ArchiveError(f"{what}: file '{MANIFEST}' is missing")
    manifest_info = zf.getinfo(MANIFEST)
    if manifest_info.file_size > MAX_MANIFEST:
        raise ArchiveError(
            f"{what}: file '{MANIFEST}' declares {manifest_info.file_size} bytes; at most {MAX_MANIFEST}"
        )
    manifest = _manifest(_read_member(zf, manifest_info, what), what)
    listed = manifest["files"]
    for info in infos:
        name = info.filename
        if name == MANIFEST:
            continue
        if name not in listed:
            raise ArchiveError(f"{what}: file '{name}' is not listed in {MANIFEST}")
        if info.file_size != listed[name].get("size"):
            raise ArchiveError(
                f"{what}: file '{name}' declares {info.file_size} bytes, {MANIFEST} says "
                f"{listed[name].get('size')}; refused unread"
            )
    _check_layout(zf, infos, what)
    members = {MANIFEST: b""} | {
        i.filename: _read_member(zf, i, what) for i in infos if i.filename != MANIFEST
    }
    members[MANIFEST] = _read_member(zf, manifest_info, what)
    for name, entry in listed.items():
        if name not in members:
            raise ArchiveError(f"{what}: file '{name}' listed in {MANIFEST} is missing")
        got = hashlib.sha256(members[name]).hexdigest()
        if got != entry.get("sha256") or len(members[name]) != entry.get("size"):
            raise ArchiveError(
                f"{what}: file '{name}' does not match its sha256 in {MANIFEST} "
                f"(expected {entry.get('sha256')}, got {got}); the file was modified or damaged"
            )
    if not sealed:
        raise ArchiveError(f"{what}: {_locate_damage(body, members)}")
    files = {name: value for name, value in members.items() if name != MANIFEST}
    return Archive(manifest=manifest, files=files, sha256=hashlib.sha256(data).hexdigest())


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, what: str) -> bytes:
    try:
        return zf.read(info)
    except Exception as e:
        raise ArchiveError(f"{what}: file '{info.filename}' is damaged ({e})") from None


def _check_layout(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], what: str) -> None:
    """Members lie back to back from byte 0 with no extra fields or comments, and the directory
    follows the last: no bytes hide between, before or inside the headers of the listed files."""
    offset = 0
    for info in infos:
        if info.header_offset != offset or info.extra or info.comment:
            raise ArchiveError(
                f"{what}: unexpected bytes around file '{info.filename}' (at byte {info.header_offset}, "
                f"expected {offset}); the archive holds more than its listed files"
            )
        offset += 30 + len(info.filename.encode()) + info.compress_size  # local header, name, data
    if zf.start_dir != offset:
        raise ArchiveError(
            f"{what}: unexpected bytes before its zip directory (at byte {zf.start_dir}, expected "
            f"{offset}); the archive holds more than its listed files"
        )


def _manifest(raw: bytes, what: str) -> dict[str, Any]:
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArchiveError(f"{what}: file '{MANIFEST}' is not valid JSON ({e})") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
        raise ArchiveError(f"{what}: file '{MANIFEST}' has no 'files' table of sha256 and size")
    return manifest


def _locate_damage(body: bytes, members: dict[str, bytes]) -> str:
    """Every file verified but the seal did not: find the damaged zip header by rebuilding the archive."""
    rebuilt = _zip(members)[:-SEAL_LEN]
    if rebuilt == body:
        return "the seal at its end is damaged (every file inside verifies)"
    if len(rebuilt) != len(body):
        return "its zip headers were modified (every file inside verifies, the seal does not)"
    offset = next(i for i, (a, b) in enumerate(zip(rebuilt, body)) if a != b)
    zf = zipfile.ZipFile(io.BytesIO(rebuilt + b"\0" * SEAL_LEN))
    where = "the zip end record"
    if offset < zf.start_dir:
        owner = max((i for i in zf.infolist() if i.header_offset <= offset), key=lambda i: i.header_offset)
        where = f"the zip header of file '{owner.filename}'"
    else:
        pos = zf.start_dir
        for info in zf.infolist():
            pos += 46 + len(info.filename.encode()) + len(info.extra) + len(info.comment)
            if offset < pos:
                where = f"the zip directory entry of file '{info.filename}'"
                break
    return f"byte {offset} in {where} was modified (every file inside verifies, the seal does not)"
