"""Weights and checkpoints are verified on every load; damage is an error naming the file."""

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

import ember
from ember.deploy.bundle import package
from ember.recipe import evaluate_run, load_run_model
from ember.train import WeightsError
from ember.train import checkpoint as ck
from ember.train.finetune import PretrainedError, load_pretrained
from ember.train.sealed import read_safetensors


def flip_last_byte(path: Path) -> None:
    """Flip one bit in the tensor data (the last byte of a safetensors file is data)."""
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x10
    path.write_bytes(bytes(raw))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    runs = tmp_path_factory.mktemp("runs")
    result = ember.fit(
        "configs/digits-cnn.yaml" if Path("configs").is_dir() else _config(),
        {"trainer.epochs": 1, "model.name": "cnn_tiny"},
        runs_dir=runs,
        progress=False,
    )
    return result.run_id, runs


def _config() -> str:
    return str(Path(__file__).resolve().parents[2] / "configs" / "digits-cnn.yaml")


def _copy_run(trained: tuple[str, Path], tmp_path: Path) -> tuple[str, Path]:
    import shutil

    run_id, runs = trained
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    return run_id, copy


def test_a_flipped_byte_in_run_weights_is_refused_by_every_stage(
    trained: tuple[str, Path], tmp_path: Path
) -> None:
    run_id, runs = _copy_run(trained, tmp_path)
    weights = runs / run_id / "model.safetensors"
    load_run_model(run_id, runs_dir=runs)  # intact: loads
    flip_last_byte(weights)
    for stage in (
        lambda: load_run_model(run_id, runs_dir=runs),
        lambda: evaluate_run(run_id, "test", runs_dir=runs),
        lambda: package(run_id, tmp_path / "x.ember", runs_dir=runs),
        lambda: load_pretrained(nn.Linear(2, 2), run_id, runs_dir=runs),
    ):
        with pytest.raises((WeightsError, PretrainedError), match=r"model\.safetensors.*(damaged|modified)"):
            stage()
    assert not (tmp_path / "x.ember").exists()


def test_a_truncated_weights_file_names_the_file(trained: tuple[str, Path], tmp_path: Path) -> None:
    run_id, runs = _copy_run(trained, tmp_path)
    weights = runs / run_id / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(WeightsError, match=str(weights)):
        load_run_model(run_id, runs_dir=runs)
    bare = tmp_path / "bare.safetensors"  # no recorded sha256: the file's own digest and header
    bare.write_bytes(weights.read_bytes()[:50])
    with pytest.raises(PretrainedError, match="bare.safetensors.*truncated"):
        load_pretrained(nn.Linear(2, 2), bare)


def test_the_final_weights_carry_their_own_digest(trained: tuple[str, Path], tmp_path: Path) -> None:
    run_id, runs = _copy_run(trained, tmp_path)
    weights = runs / run_id / "model.safetensors"
    loose = tmp_path / "loose.safetensors"  # away from its run: no recorded sha256 to compare
    loose.write_bytes(weights.read_bytes())
    read_safetensors(loose)
    flip_last_byte(loose)
    with pytest.raises(PretrainedError, match="loose.safetensors is damaged"):
        load_pretrained(nn.Linear(2, 2), loose)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def test_a_flipped_byte_in_a_checkpoint_is_refused_and_resume_falls_back_saying_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = _model()
    for step in (1, 2):
        ck.save_checkpoint(tmp_path / f"step-{step:06d}.safetensors", model=model, meta={"step": step})
    newest = tmp_path / "step-000002.safetensors"
    flip_last_byte(newest)
    with pytest.raises(ck.CheckpointError, match="step-000002.safetensors is damaged"):
        ck.load_checkpoint(newest)
    with caplog.at_level(logging.WARNING, logger="ember.train"):
        found = ck.latest_checkpoint(tmp_path)
    assert found is not None and found.meta["step"] == 1
    assert "step-000002.safetensors" in caplog.text and "using step-000001.safetensors" in caplog.text


def test_a_flipped_byte_in_a_checkpoint_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "step-000001.safetensors"
    ck.save_checkpoint(path, model=_model(), meta={"lr": 0.01})
    raw = path.read_bytes()
    at = raw.index(b"0.01")  # a value in the JSON header that would still parse
    path.write_bytes(raw[:at] + b"0.05" + raw[at + 4 :])
    with pytest.raises(ck.CheckpointError, match="damaged"):
        ck.load_checkpoint(path)
