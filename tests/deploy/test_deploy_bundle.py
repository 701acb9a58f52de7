"""Bundles: a run packaged and opened again gives the same model; any damage is named."""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import ks_2samp

import ember
from ember.data import fingerprint_indices
from ember.deploy.bundle import BundleError, open_bundle, package
from ember.deploy.profile import ReferenceProfile, build_profile, embed
from ember.recipe import load_run_model
from ember.track import RunNotFoundError, RunStore, sha256_file
from ember.track.artifacts import SEAL_LEN, SEAL_PREFIX

CONFIG = {
    "name": "digits-tiny",
    "data": {"name": "digits", "batch_size": 64},
    "model": {"name": "cnn_tiny"},
    "optim": {"lr": 0.01},
    "trainer": {"epochs": 2, "seed": 0},
}
MEMBERS = {"manifest.json", "model.safetensors", "config.yaml", "meta.json", "profile.json", "card.md"}


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    """(runs dir, run id, bundle path) of a 2-epoch cnn_tiny digits run, packaged with a card."""
    root = tmp_path_factory.mktemp("bundle")
    runs = root / "runs"
    result = ember.fit(CONFIG, runs_dir=runs, progress=False)
    card = root / "CARD.md"
    card.write_text("# digits-tiny\nIntended use: tests.\n")
    path = package(result.run_id, root / "digits.ember", runs_dir=runs, card=card)
    return runs, result.run_id, path


def test_round_trip_rebuilds_the_run_model_exactly(packaged: tuple[Path, str, Path]) -> None:
    runs, run_id, path = packaged
    bundle = open_bundle(path)
    prep, record = load_run_model(run_id, runs_dir=runs)
    x = prep.test.x
    with torch.no_grad():
        want = prep.model.eval()(x)
        assert torch.equal(bundle.model(x), want)
        assert torch.equal(ember.load(path)(x), want)
    assert not bundle.model.training
    assert bundle.sha256 == sha256_file(path) and bundle.path == path
    assert bundle.input_shape == (1, 8, 8) and bundle.classes == [str(i) for i in range(10)]
    assert bundle.config == prep.config and bundle.card is not None and "Intended use" in bundle.card
    meta = bundle.meta
    assert meta["model"] == {
        "name": "cnn_tiny",
        "class": "CNN",
        "parameters": sum(p.numel() for p in prep.model.parameters()),
        "code": "ember's zoo",
    }
    # the run's own spec, as recorded when it trained: no second derivation of the builder kwargs
    assert meta["spec"] == json.loads((RunStore(runs).folder(run_id) / "spec.json").read_text())
    assert bundle.spec.kwargs == {"num_classes": 10, "in_channels": 1, "image_size": 8}
    assert meta["profile"] == {"split": "train", "rows": len(prep.train), "note": ""}
    assert meta["data"]["sha256"] == record.data_sha256
    assert meta["data"]["splits"] == {k: fingerprint_indices(v) for k, v in prep.splits.items()}
    assert meta["code"]["git"] == record.source["git"] and meta["code"]["ember_version"] == ember.__version__
    assert meta["environment"] == record.environment and meta["run"]["id"] == run_id
    logged = {name: value for _, _, name, value in RunStore(runs).metrics(run_id)}
    assert meta["metrics"]["test/accuracy"] == logged["test/accuracy"]
    # the weights are the run's own file, byte for byte: the same sha256 the run store recorded
    recorded = {p: digest for p, _, digest, _ in RunStore(runs).artifacts(run_id)}
    assert bundle.files is not None and bundle.files["model.safetensors"] == recorded["model.safetensors"]


def test_bundle_holds_no_pickle_and_only_the_documented_files(packaged: tuple[Path, str, Path]) -> None:
    _, _, path = packaged
    with zipfile.ZipFile(path) as zf:
        assert {i.filename for i in zf.infolist()} == MEMBERS
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
        for info in zf.infolist():
            data = zf.read(info)
            assert not data.startswith(b"\x80"), f"{info.filename} looks like a pickle"
        manifest = json.loads(zf.read("manifest.json"))
        weights = zf.read("model.safetensors")
    header = json.loads(weights[8 : 8 + int.from_bytes(weights[:8], "little")])
    assert manifest["format"] == "ember-bundle" and manifest["format_version"] == 2
    assert set(manifest["files"]) == MEMBERS - {"manifest.json"}
    assert "head.weight" in header  # safetensors: an 8-byte length, a JSON header, raw tensor bytes


def _member_span(data: bytes, name: str) -> tuple[int, int]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = zf.getinfo(name)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    return start, start + info.compress_size


def _sealed_zip(members: dict[str, bytes]) -> bytes:
    """A zip of ``members`` sealed the way ember seals bundles (a tamperer can do this too)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, content in members.items():
            zf.writestr(name, content)
        zf.comment = b"\0" * SEAL_LEN
    body = buf.getvalue()[:-SEAL_LEN]
    return body + SEAL_PREFIX + hashlib.sha256(body).hexdigest().encode()


def _flip(data: bytes, i: int) -> bytes:
    out = bytearray(data)
    out[i] ^= 0x20
    return bytes(out)


def test_a_flipped_byte_in_every_file_is_named(packaged: tuple[Path, str, Path], tmp_path: Path) -> None:
    _, _, path = packaged
    data = path.read_bytes()
    for name in sorted(MEMBERS):
        start, end = _member_span(data, name)
        for i in (start, (start + end) // 2, end - 1):
            bad = tmp_path / "bad.ember"
            bad.write_bytes(_flip(data, i))
            with pytest.raises(BundleError, match=f"file '{name}'"):
                open_bundle(bad)


def test_a_rewritten_file_fails_its_manifest_sha256(packaged: tuple[Path, str, Path], tmp_path: Path) -> None:
    """A tamperer who rewrites a file with a valid zip CRC is caught by the manifest's sha256."""
    _, _, path = packaged
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    for name in sorted(MEMBERS):
        forged = dict(members)
        forged[name] = _flip(members[name], len(members[name]) // 2)
        bad = tmp_path / f"forged-{name}.ember"
        bad.write_bytes(_sealed_zip(forged))
        with pytest.raises(BundleError) as err:
            open_bundle(bad)
        message = str(err.value)
        if name == "manifest.json":
            assert "manifest.json" in message
        else:
            assert f"file '{name}' does not match its sha256 in manifest.json" in message


def test_a_flipped_byte_anywhere_is_an_error(packaged: tuple[Path, str, Path], tmp_path: Path) -> None:
    """Headers, directory and seal included: never a silent load, never a foreign exception."""
    _, _, path = packaged
    data = path.read_bytes()
    stride = max(1, len(data) // 400)
    positions = sorted({*range(0, len(data), stride), *range(len(data) - 120, len(data))})
    bad = tmp_path / "bad.ember"
    for i in positions:
        bad.write_bytes(_flip(data, i))
        with pytest.raises(BundleError, match=f"bundle {bad}"):
            open_bundle(bad)
    bad.write_bytes(data[:-1])
    with pytest.raises(BundleError, match="no seal"):
        open_bundle(bad)


def test_archive_names_and_strays_are_refused(packaged: tuple[Path, str, Path], tmp_path: Path) -> None:
    _, _, path = packaged
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    for extra, error in [
        ("../evil.py", "holds a file named '../evil.py'"),
        ("/etc/passwd", "holds a file named '/etc/passwd'"),
        ("..\\x", "holds a file named '..\\\\x'"),
        ("sub/dir.txt", "holds a file named 'sub/dir.txt'"),
        ("stray.txt", "file 'stray.txt' is not listed in manifest.json"),
    ]:
        bad = tmp_path / "bad.ember"
        bad.write_bytes(_sealed_zip({**members, extra: b"x"}))
        with pytest.raises(BundleError, match=re.escape(error)):
            open_bundle(bad)
    unsealed = io.BytesIO()
    with zipfile.ZipFile(unsealed, "w") as zf:
        for member, content in members.items():
            zf.writestr(member, content)
    bad.write_bytes(unsealed.getvalue())
    with pytest.raises(BundleError, match="not a sealed ember archive"):
        open_bundle(bad)
    with pytest.raises(FileNotFoundError, match="no bundle file"):
        open_bundle(tmp_path / "missing.ember")


def test_profile_describes_the_training_split(packaged: tuple[Path, str, Path]) -> None:
    runs, run_id, path = packaged
    profile = open_bundle(path).profile
    prep, _ = load_run_model(run_id, runs_dir=runs)
    x = prep.train.x
    feats = profile.features(x)
    # the same pooled features by a different route: channel mean, and 2x2 average pooling of 8x8 to 4x4
    reference = torch.cat([x.mean(dim=(2, 3)), F.avg_pool2d(x, 2).flatten(1)], dim=1)
    torch.testing.assert_close(feats, reference)
    assert profile.feature_names[:2] == ["mean_c0", "grid_c0_r0_c0"] and len(profile.feature_names) == 17
    assert profile.rows == len(x) and len(profile.feature_sample) == 500
    torch.testing.assert_close(torch.tensor(profile.mean), feats.mean(0), rtol=0, atol=1e-6)
    with torch.no_grad():
        predicted = prep.model.eval()(x).argmax(1)
        embedding = embed(prep.model, x[:3])
    expected = torch.bincount(predicted, minlength=10) / len(x)
    torch.testing.assert_close(torch.tensor(profile.prediction_histogram), expected, atol=1e-6, rtol=0)
    assert profile.embedding_kind == "pre_logits" and embedding.shape == (3, 16)
    assert len(profile.embedding_sample) == 500 and len(profile.embedding_sample[0]) == 16
    # drift statistics: none on the training data itself, large when the images are inverted
    assert profile.psi(feats).abs().max().item() < 1e-6
    shifted = profile.features(1.0 - x)
    assert (profile.psi(shifted) > 0.25).float().mean() > 0.5
    ks = profile.ks(shifted)
    sample = torch.tensor(profile.feature_sample)
    for j in (0, 5, 10):
        assert ks[j].item() == pytest.approx(ks_2samp(sample[:, j], shifted[:, j]).statistic, abs=1e-6)
    assert ReferenceProfile.from_json(profile.to_json()) == profile


def test_profile_of_tables_and_regression() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 100, generator=g)
    model = torch.nn.Linear(100, 1)
    profile = build_profile(model, x, task="regression", sample_size=50)
    assert profile.features(x).shape == (300, 64) and profile.feature_names[0] == "pool0"
    assert profile.prediction_histogram is None and profile.prediction_quantiles is not None
    assert profile.embedding_kind == "outputs" and len(profile.embedding_sample) == 50
    with torch.no_grad():
        out = model(x)
    assert profile.prediction_quantiles[0][0] == pytest.approx(out.min().item(), abs=1e-6)
    assert profile.prediction_quantiles[0][-1] == pytest.approx(out.max().item(), abs=1e-6)
    small = build_profile(torch.nn.Linear(8, 3), x[:, :8], max_rows=100, sample_size=10)
    assert small.rows == 100 and small.features(x[:2, :8]).tolist() == x[:2, :8].tolist()
    with pytest.raises(ValueError, match="do not match"):
        small.features(x[:2])


def test_package_errors_name_the_run(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    with pytest.raises(RunNotFoundError, match="no run 'nope'"):
        package("nope", tmp_path / "x.ember", runs_dir=runs)
    run = RunStore(runs).create("unfinished", config_yaml="model:\n  name: cnn_tiny\n")
    with pytest.raises(FileNotFoundError, match="has no final weights"):
        package(run.id, tmp_path / "x.ember", runs_dir=runs)
    assert not (tmp_path / "x.ember").exists()


def test_a_version_1_bundle_is_still_read_and_served(tmp_path: Path) -> None:
    """Format 1: meta.json names model.name + model.kwargs and the input by hand; no spec."""
    from fastapi.testclient import TestClient
    from safetensors.torch import save

    from ember.config import dump_yaml, load_config
    from ember.deploy.serve import ServedModel, create_app
    from ember.models import create
    from ember.track.artifacts import pack_archive

    torch.manual_seed(0)
    kwargs = {"num_classes": 10, "in_channels": 1, "image_size": 8}
    model = create("cnn_tiny", **kwargs).eval()
    meta = {
        "format": "ember-bundle", "format_version": 1, "name": "old",
        "model": {"name": "cnn_tiny", "kwargs": kwargs, "class": "CNN", "parameters": 1},
        "task": "classification", "input_shape": [1, 8, 8], "input_dtype": "float32", "input_range": [0.0, 1.0],
        "classes": [str(i) for i in range(10)], "num_classes": 10,
    }  # fmt: skip
    files = {
        "model.safetensors": save(model.state_dict()),
        "config.yaml": dump_yaml(load_config({"model": {"name": "cnn_tiny"}})).encode(),
        "meta.json": json.dumps(meta).encode(),
        "profile.json": build_profile(model, torch.rand(64, 1, 8, 8)).to_json().encode(),
    }
    path = tmp_path / "old.ember"
    path.write_bytes(pack_archive(files, kind="ember-bundle", version=1))
    bundle = open_bundle(path)
    assert (
        bundle.spec.model == "cnn_tiny"
        and bundle.spec.kwargs == kwargs
        and bundle.spec.task == "classification"
    )
    assert bundle.spec.inputs.kind == "image" and bundle.spec.inputs.value_range == (0.0, 1.0)
    assert bundle.classes == meta["classes"] and bundle.profile is not None and bundle.tokenizer is None
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert bundle.model is not None and torch.equal(bundle.model(x), model(x))
    with TestClient(create_app(ServedModel.from_bundle(bundle))) as client:
        reply = client.post("/v1/predict", json={"inputs": x.tolist()})
    assert reply.status_code == 200 and len(reply.json()["labels"]) == 3
    del files["profile.json"]  # format 1 required it
    path.write_bytes(pack_archive(files, kind="ember-bundle", version=1))
    with pytest.raises(BundleError, match="file 'profile.json' is missing"):
        open_bundle(path)


def test_a_python_run_is_packaged_from_its_kept_data(tmp_path: Path) -> None:
    """A Trainer run on the user's tensors: spec and splits from the run; without its training
    split the drift profile is of its validation split, and the bundle says so."""
    from ember.models import create

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(60, 5, generator=g), torch.arange(60) % 2
    trainer = ember.Trainer(
        create("mlp_tiny", in_channels=5, image_size=1, num_classes=2), epochs=1, runs_dir=tmp_path, progress=False
    )  # fmt: skip
    trainer.fit((x[:40], y[:40]), (x[40:], y[40:]))
    assert trainer.run is not None
    run_id = trainer.run.id
    bundle = open_bundle(package(run_id, tmp_path / "py.ember", runs_dir=tmp_path))
    assert (
        bundle.spec.model == "mlp_tiny"
        and bundle.spec.inputs.kind == "table"
        and bundle.classes == ["0", "1"]
    )
    assert bundle.meta["profile"] == {"split": "train", "rows": 40, "note": ""}
    assert (
        set(bundle.meta["data"]["splits"]) == {"train", "val"} and bundle.meta["data"]["sizes"]["val"] == 20
    )
    (RunStore(tmp_path).folder(run_id) / "data" / "train.safetensors").unlink()
    bundle = open_bundle(package(run_id, tmp_path / "py2.ember", runs_dir=tmp_path))
    assert (
        bundle.meta["profile"]["split"] == "val" and bundle.profile is not None and bundle.profile.rows == 20
    )
    assert "kept no training split" in bundle.meta["profile"]["note"]
