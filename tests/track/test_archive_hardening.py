"""Archives refuse zip bombs, size lies and hidden bytes before reading; registry names are whole."""

import hashlib
import io
import json
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from ember.deploy.bundle import BundleError, open_bundle
from ember.track.artifacts import SEAL_LEN, SEAL_PREFIX, ArchiveError, pack_archive, read_archive
from ember.track.registry import ModelRegistry, RegistryError, check_alias, check_name, parse_ref

BOMB_BYTES = 64 << 20  # inflates to 64 MB from ~64 KB


def _sealed_zip(members: dict[str, tuple[bytes, int]], manifest_sizes: dict[str, int] | None = None) -> bytes:
    """A sealed archive with members stored by the given zip method; the manifest claims the real
    sha256 and the given sizes (default the real ones)."""
    files = {
        name: {
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": (manifest_sizes or {}).get(name, len(data)),
        }
        for name, (data, _) in members.items()
    }
    manifest = json.dumps({"format": "ember-bundle", "format_version": 1, "files": files}).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(zipfile.ZipInfo("manifest.json", date_time=(1980, 1, 1, 0, 0, 0)), manifest)
        for name, (data, method) in members.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            zf.writestr(info, data)
        zf.comment = b"\0" * SEAL_LEN
    body = buf.getvalue()[:-SEAL_LEN]
    return body + SEAL_PREFIX + hashlib.sha256(body).hexdigest().encode()


def _peak_mib(fn: object) -> float:
    tracemalloc.start()
    try:
        with pytest.raises((ArchiveError, RegistryError)) as caught:
            fn()  # type: ignore[operator]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "compressed" in str(caught.value)
    return peak / 2**20


def test_a_zip_bomb_is_refused_before_it_inflates(tmp_path: Path) -> None:
    bomb = _sealed_zip({"model.safetensors": (b"\0" * BOMB_BYTES, zipfile.ZIP_DEFLATED)})
    assert len(bomb) < BOMB_BYTES / 200
    path = tmp_path / "bomb.ember"
    path.write_bytes(bomb)
    del bomb
    assert _peak_mib(lambda: open_bundle(path)) < 16  # the whole 64 MB would be inflated before
    registry = ModelRegistry(tmp_path / "registry")
    assert _peak_mib(lambda: registry.push(path, "bomb")) < 16
    assert registry.list() == []


def test_a_member_larger_than_the_manifest_says_is_refused_unread(tmp_path: Path) -> None:
    data = _sealed_zip({"meta.json": (b"{}" * 1000, zipfile.ZIP_STORED)}, manifest_sizes={"meta.json": 2})
    with pytest.raises(ArchiveError, match="'meta.json' declares 2000 bytes, manifest.json says 2"):
        read_archive(data)


def test_bytes_hidden_between_members_are_refused() -> None:
    good = pack_archive({"a.json": b"{}", "b.json": b"[]"}, kind="ember-bundle")
    body = good[:-SEAL_LEN]
    zf = zipfile.ZipFile(io.BytesIO(good))
    second = zf.getinfo("b.json").header_offset
    # insert bytes before the second member, move the directory's offsets to match and reseal:
    # a valid zip whose listed files all verify, carrying a payload no manifest names
    forged = _shift(body, second, b"HIDDEN PAYLOAD", zf.infolist())
    forged += SEAL_PREFIX + hashlib.sha256(forged).hexdigest().encode()
    assert zipfile.ZipFile(io.BytesIO(forged)).read("b.json") == b"[]"
    with pytest.raises(ArchiveError, match="unexpected bytes"):
        read_archive(forged)


def _shift(body: bytes, at: int, junk: bytes, infos: list[zipfile.ZipInfo]) -> bytes:
    """``body`` with ``junk`` inserted at ``at`` and the zip directory's offsets moved to match."""
    import struct

    out = bytearray(body[:at] + junk + body[at:])
    end = out.rfind(b"PK\x05\x06")
    start_dir = struct.unpack_from("<I", out, end + 16)[0] + len(junk)
    struct.pack_into("<I", out, end + 16, start_dir)
    pos = start_dir
    for _ in infos:
        offset = struct.unpack_from("<I", out, pos + 42)[0]
        if offset >= at:
            struct.pack_into("<I", out, pos + 42, offset + len(junk))
        n, m, k = struct.unpack_from("<HHH", out, pos + 28)
        pos += 46 + n + m + k
    return bytes(out)


@pytest.mark.parametrize("name", ["digits\n", "digits\r\n", "a\nb"])
def test_a_name_with_a_newline_is_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(RegistryError):
        check_name(name)
    with pytest.raises(RegistryError):
        parse_ref(name)
    with pytest.raises(RegistryError):
        check_alias("production\n")
    path = tmp_path / "m.ember"
    path.write_bytes(pack_archive({"meta.json": b"{}"}, kind="ember-bundle"))
    with pytest.raises(RegistryError):
        ModelRegistry(tmp_path / "registry").push(path, name)


def test_a_member_name_with_a_newline_is_refused() -> None:
    with pytest.raises(ArchiveError):
        pack_archive({"meta.json\n": b"{}"}, kind="ember-bundle")
    data = _sealed_zip({"meta.json\n": (b"{}", zipfile.ZIP_STORED)})
    with pytest.raises((ArchiveError, BundleError), match="flat, unique names"):
        read_archive(data)
