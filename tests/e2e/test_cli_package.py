"""CLI path: train → ember package → ember registry push/list/show/promote/pull → ember export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import ember
from ember.cli import main

CONFIG = {"name": "digits-tiny", "model": {"name": "cnn_tiny"}, "trainer": {"epochs": 1}}


def _ember(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the ``ember`` command line in this process; returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_package_registry_export(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMBER_REGISTRY", str(tmp_path / "registry"))
    runs = str(tmp_path / "runs")
    run_id = ember.fit(CONFIG, runs_dir=runs, progress=False).run_id
    bundle = tmp_path / "digits.ember"

    code, out, _ = _ember(capsys, "package", run_id, "-o", str(bundle), "--runs-dir", runs)
    assert code == 0 and f"bundle {bundle}" in out and "model.safetensors" in out
    (tmp_path / "CARD.md").write_text("# card\n")
    carded = tmp_path / "digits-card.ember"
    _ember(
        capsys,
        "package",
        "latest",
        "-o",
        str(carded),
        "--runs-dir",
        runs,
        "--card",
        str(tmp_path / "CARD.md"),
    )

    code, out, _ = _ember(capsys, "registry", "push", str(bundle), "--name", "digits-cnn")
    assert code == 0 and out.startswith("pushed digits-cnn@1") and run_id in out
    assert _ember(capsys, "registry", "push", str(carded), "--name", "digits-cnn")[1].startswith(
        "pushed digits-cnn@2"
    )
    assert _ember(capsys, "registry", "push", str(carded), "--name", "digits-cnn")[1].startswith(
        "pushed digits-cnn@2"
    )
    assert _ember(capsys, "registry", "promote", "digits-cnn@1", "production")[0] == 0

    code, out, _ = _ember(capsys, "registry", "list")
    assert code == 0 and "digits-cnn" in out and "production=v1" in out and "v2" in out
    listed = json.loads(_ember(capsys, "registry", "list", "--json")[1])
    assert [v["ref"] for v in listed] == ["digits-cnn@1", "digits-cnn@2"] and listed[0]["run_id"] == run_id
    code, out, _ = _ember(capsys, "registry", "show", "digits-cnn")
    assert code == 0 and "lineage of digits-cnn@2" in out and run_id in out and "digits" in out
    shown = json.loads(_ember(capsys, "registry", "show", "digits-cnn@production", "--json")[1])
    assert shown["version"] == 1 and shown["lineage"]["data"]["sha256"] == shown["data_sha256"]

    pulled = tmp_path / "pulled.ember"
    assert _ember(capsys, "registry", "pull", "digits-cnn@production", "-o", str(pulled))[0] == 0
    assert pulled.read_bytes() == bundle.read_bytes()

    onnx_path = tmp_path / "digits.onnx"
    code, out, err = _ember(
        capsys, "export", "digits-cnn@production", "--format", "onnx", "-o", str(onnx_path)
    )
    assert code == 0, err
    assert "max abs error" in out and "batch sizes 1, 4, 7" in out
    model = ember.load(pulled)
    x = torch.rand(5, 1, 8, 8)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        assert float(np.abs(got - model(x).numpy()).max()) <= 1e-4
    props = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert props["ember.bundle_sha256"] == shown["sha256"] and props["ember.classes"].startswith("0,1,2")

    code, out, _ = _ember(capsys, "registry", "delete", "digits-cnn@2")
    assert code == 0 and "deleted digits-cnn@2" in out


def test_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMBER_REGISTRY", str(tmp_path / "registry"))
    for args, message in [
        (("registry", "show", "../x"), "invalid model name '../x'"),
        (("registry", "pull", "%2e%2e%2f", "-o", str(tmp_path / "o")), "invalid model name '%2e%2e%2f'"),
        (("registry", "show", "/etc/passwd"), "invalid model name"),
        (("registry", "show", "ghost"), "no model 'ghost'"),
        (("registry", "promote", "ghost@1", "../prod"), "invalid alias"),
        (("package", "nope", "-o", str(tmp_path / "x.ember"), "--runs-dir", str(tmp_path)), "no run 'nope'"),
        (("export", str(tmp_path / "missing.ember"), "--format", "onnx"), "no bundle file"),
    ]:
        code, _, err = _ember(capsys, *args)
        assert code == 2, args
        assert err.count("\n") == 1 and message in err and "Traceback" not in err, err
    tampered = tmp_path / "bad.ember"
    tampered.write_bytes(b"PK\x03\x04" + b"\0" * 200)
    code, _, err = _ember(capsys, "registry", "push", str(tampered), "--name", "x")
    assert code == 2 and "not a sealed ember archive" in err


@pytest.mark.parametrize("command", [("package",), ("registry",), ("registry", "push"), ("export",)])
def test_help_has_examples(capsys: pytest.CaptureFixture[str], command: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "usage: ember " + " ".join(command) in out
    if command != ("registry", "push"):
        assert "examples:" in out
