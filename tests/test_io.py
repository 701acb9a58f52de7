"""The bottom tier's I/O: atomic writes leave the old file or the whole new one; optional imports
fail with the pip line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ember._io import atomic_folder, atomic_path, atomic_write_bytes, require
from ember.config import ConfigError, parse_yaml
from ember.errors import UserError


def test_atomic_write_replaces_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "file.bin"
    atomic_write_bytes(path, b"old")
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in path.parent.iterdir()) == ["file.bin"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("the writer failed")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]


def test_temporary_keeps_the_suffix_and_is_hidden(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "model.onnx") as tmp:
        assert tmp.suffix == ".onnx" and tmp.name.startswith(".") and tmp.parent == tmp_path
        tmp.write_bytes(b"x")


def test_atomic_write_replaces_a_symlink_instead_of_writing_through_it(tmp_path: Path) -> None:
    target, link = tmp_path / "target", tmp_path / "link"
    target.write_bytes(b"keep")
    link.symlink_to(target)
    atomic_write_bytes(link, b"new")
    assert target.read_bytes() == b"keep" and not link.is_symlink() and link.read_bytes() == b"new"


def test_atomic_folder_appears_whole_and_keeps_an_earlier_one(tmp_path: Path) -> None:
    entry = tmp_path / "cache" / "entry"
    with pytest.raises(ValueError), atomic_folder(entry) as work:
        (work / "a").write_text("1")
        raise ValueError("interrupted")
    assert not entry.exists() and list(entry.parent.iterdir()) == []
    with atomic_folder(entry) as work:
        (work / "a").write_text("first")
    with atomic_folder(entry) as work:  # another process finished first: its folder stays
        (work / "a").write_text("second")
    assert (entry / "a").read_text() == "first" and [p.name for p in entry.parent.iterdir()] == ["entry"]


def test_require_names_the_pip_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"^ONNX export needs onnxruntime: pip install 'ember\[export\]'$"):
        require("onnxruntime", "export", what="ONNX export")
    assert require("json", "serve").__name__ == "json"


def test_parse_yaml_of_a_stored_config() -> None:
    assert parse_yaml(b"model:\n  name: cnn_tiny\n") == {"model": {"name": "cnn_tiny"}}
    assert parse_yaml("") == {}
    with pytest.raises(ConfigError, match="run.yaml is not valid YAML"):
        parse_yaml("a: [", source="run.yaml")
    with pytest.raises(ConfigError, match="must hold a mapping of sections, got list"):
        parse_yaml("- 1\n")


def test_config_errors_are_user_errors() -> None:
    assert issubclass(ConfigError, UserError) and issubclass(ConfigError, ValueError)
