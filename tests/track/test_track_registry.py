"""The model registry: versions, aliases, lineage, content-addressed blobs, and what it refuses."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from ember.track.artifacts import ArchiveError, pack_archive, read_archive
from ember.track.registry import ModelNotFoundError, ModelRegistry, RegistryError


def _bundle(folder: Path, tag: str, *, run: str = "run-a", kind: str = "ember-bundle") -> Path:
    """A small sealed archive with a bundle's meta.json (the registry never needs the model itself)."""
    meta = {
        "run": {"id": run, "config_sha256": "c" * 64, "seed": 0},
        "data": {"dataset": "digits", "sha256": "d" * 64, "splits": {"train": "1" * 64, "test": "2" * 64}},
        "model": {"name": "cnn_tiny", "kwargs": {}},
        "metrics": {"test/accuracy": 0.9},
        "code": {"git": "abc", "ember_version": "0.1.0"},
    }
    files = {"meta.json": json.dumps(meta).encode(), "model.safetensors": tag.encode()}
    path = folder / f"{tag}.ember"
    path.write_bytes(pack_archive(files, kind=kind))
    return path


@pytest.fixture
def reg(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry")


def test_push_numbers_versions_and_records_lineage(reg: ModelRegistry, tmp_path: Path) -> None:
    first = reg.push(_bundle(tmp_path, "one"), "digits-cnn")
    second = reg.push(_bundle(tmp_path, "two", run="run-b"), "digits-cnn")
    again = reg.push(_bundle(tmp_path, "two", run="run-b"), "digits-cnn")  # identical bytes: no new version
    assert (first.version, second.version, again.version) == (1, 2, 2)
    assert first.ref == "digits-cnn@1" and second.run_id == "run-b" and second.data_sha256 == "d" * 64
    blob = reg.blobs / second.sha256
    assert blob.read_bytes() == (tmp_path / "two.ember").read_bytes()
    lineage = reg.lineage("digits-cnn@2")
    assert lineage["run"]["id"] == "run-b" and lineage["data"]["splits"]["train"] == "1" * 64
    assert lineage["bundle"]["sha256"] == second.sha256 and lineage["bundle"]["model"] == "cnn_tiny"
    assert [v.ref for v in reg.list()] == ["digits-cnn@1", "digits-cnn@2"]
    # the same bundle under a second name shares the blob
    other = reg.push(_bundle(tmp_path, "one"), "digits-other")
    assert other.version == 1 and other.sha256 == first.sha256
    assert len(list(reg.blobs.iterdir())) == 2


def test_references_aliases_pull_and_delete(reg: ModelRegistry, tmp_path: Path) -> None:
    for tag in ("a", "b", "c"):
        reg.push(_bundle(tmp_path, tag), "m")
    assert reg.show("m").version == 3 and reg.show("m@latest").version == 3
    assert reg.show("m@2").version == 2 and reg.show("m@v2").version == 2
    assert reg.promote("m@2", "production").aliases == ("production",)
    reg.promote("m@3", "staging")
    assert reg.show("m@production").version == 2
    reg.promote("m@1", "production")  # an alias moves
    assert reg.show("m@production").version == 1 and reg.show("m@2").aliases == ()
    assert reg.resolve("m@staging").read_bytes() == (tmp_path / "c.ember").read_bytes()
    out = reg.pull("m@production", tmp_path / "out")  # a folder that does not exist yet: a file
    assert out.read_bytes() == (tmp_path / "a.ember").read_bytes()
    (tmp_path / "dir").mkdir()
    assert reg.pull("m@2", tmp_path / "dir").name == "m-v2.ember"

    with pytest.raises(ModelNotFoundError, match="no version or alias 'canary'.*versions: 1, 2, 3"):
        reg.show("m@canary")
    with pytest.raises(ModelNotFoundError, match="did you mean 'm'"):
        reg.show("mm")
    with pytest.raises(RegistryError, match="aliased as production"):
        reg.delete("m@1")
    with pytest.raises(RegistryError, match="names every version"):
        reg.delete("m")
    blob_b = reg.blobs / reg.show("m@2").sha256
    assert [v.version for v in reg.delete("m@2")] == [2] and not blob_b.exists()
    assert [v.version for v in reg.versions("m")] == [1, 3]
    reg.push(_bundle(tmp_path, "d"), "m")
    assert reg.show("m").version == 4  # numbers are never reused
    assert len(reg.delete("m", force=True)) == 3 and reg.list() == []
    assert list(reg.blobs.iterdir()) == []


@pytest.mark.parametrize(
    "ref",
    [
        "../x",
        "..",
        "%2e%2e%2f",
        "%2e%2e%2fx",
        "/etc/passwd",
        "a/b",
        "a\\b",
        "Digits",
        "",
        "-x",
        "x" * 65,
        "m@../x",
        "m@%2e%2e",
        "m@/abs",
        "m@0",
        "m@",
        "m@@1",
    ],
)
def test_bad_names_and_references_are_refused(reg: ModelRegistry, tmp_path: Path, ref: str) -> None:
    bundle = _bundle(tmp_path, "a")
    reg.push(bundle, "m")
    with pytest.raises(RegistryError, match="invalid"):
        reg.show(ref)
    with pytest.raises(RegistryError, match="invalid"):
        reg.pull(ref, tmp_path / "out.ember")
    if "@" not in ref:
        with pytest.raises(RegistryError, match="invalid model name"):
            reg.push(bundle, ref)
    assert not (tmp_path / "out.ember").exists() and not (tmp_path.parent / "x").exists()


def test_bad_aliases_are_refused(reg: ModelRegistry, tmp_path: Path) -> None:
    reg.push(_bundle(tmp_path, "a"), "m")
    for alias in ("latest", "3", "v3", "../prod", "Prod", "prod/x", "%2e"):
        with pytest.raises(RegistryError, match="invalid alias"):
            reg.promote("m@1", alias)


def test_symlinked_blobs_escaping_the_store_are_refused(reg: ModelRegistry, tmp_path: Path) -> None:
    version = reg.push(_bundle(tmp_path, "a"), "m")
    blob = reg.blobs / version.sha256
    outside = tmp_path / "outside.ember"
    outside.write_bytes(blob.read_bytes())  # same bytes, so only the symlink check can catch it
    blob.unlink()
    blob.symlink_to(outside)
    for call in (lambda: reg.resolve("m"), lambda: reg.pull("m", tmp_path / "o.ember")):
        with pytest.raises(RegistryError, match="symlink"):
            call()
    # the whole blob folder swapped for a link to elsewhere
    blob.unlink()
    moved = tmp_path / "elsewhere"
    reg.blobs.rename(moved)
    (moved / version.sha256).write_bytes(outside.read_bytes())
    reg.blobs.symlink_to(moved, target_is_directory=True)
    with pytest.raises(RegistryError, match="symlink"):
        reg.resolve("m")


def test_a_tampered_database_or_blob_is_refused(reg: ModelRegistry, tmp_path: Path) -> None:
    version = reg.push(_bundle(tmp_path, "a"), "m")
    blob = reg.blobs / version.sha256
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 1
    blob.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="is damaged"):
        reg.pull("m", tmp_path / "o.ember")
    assert not (tmp_path / "o.ember").exists()
    reg.push(_bundle(tmp_path, "a"), "m")  # pushing the same bundle again repairs the blob
    assert reg.resolve("m@1").read_bytes() == (tmp_path / "a.ember").read_bytes()
    with sqlite3.connect(reg.db_path) as db:
        db.execute("UPDATE versions SET sha256 = '../../../outside' WHERE version = 1")
    db.close()
    with pytest.raises(RegistryError, match="refusing blob name"):
        reg.resolve("m@1")


def test_push_refuses_what_is_not_a_sound_bundle(reg: ModelRegistry, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no bundle file"):
        reg.push(tmp_path / "missing.ember", "m")
    junk = tmp_path / "junk.ember"
    junk.write_bytes(b"not a zip at all" * 10)
    with pytest.raises(ArchiveError, match="not a sealed ember archive"):
        reg.push(junk, "m")
    other = _bundle(tmp_path, "x", kind="something-else")
    with pytest.raises(RegistryError, match="not an ember bundle"):
        reg.push(other, "m")
    good = _bundle(tmp_path, "g").read_bytes()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 1
    junk.write_bytes(bytes(flipped))
    with pytest.raises(ArchiveError, match="file '"):
        reg.push(junk, "m")
    assert reg.list() == [] and not reg.blobs.exists()


def test_sealed_archive_round_trip_and_refusals() -> None:
    files = {"a.txt": b"hello", "b.bin": bytes(range(256))}
    data = pack_archive(files, kind="k", version=3)
    assert data == pack_archive(dict(reversed(files.items())), kind="k", version=3)  # deterministic
    archive = read_archive(data)
    assert archive.files == files and archive.manifest["format_version"] == 3
    for name in ("../a", "/abs", "manifest.json", "a/b", ""):
        with pytest.raises(ArchiveError, match="cannot store"):
            pack_archive({name: b""}, kind="k")


def test_default_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EMBER_REGISTRY", str(tmp_path / "from-env"))
    assert ModelRegistry().root == tmp_path / "from-env" and (tmp_path / "from-env" / "registry.db").is_file()
