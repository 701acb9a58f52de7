"""The generative recipes (shrunk, on the bundled 8x8 digits) through the real command line:
train, then ``ember generate``, ``ember score``, ``ember caption``, and their one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

DIGITS = ["data.name=digits", "trainer.epochs=1", "--no-progress"]


def _run_id(stdout: str) -> str:
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("run "), stdout
    return last.split()[1]


def _error(proc) -> str:  # type: ignore[no-untyped-def]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    return proc.stderr


@pytest.mark.slow
def test_diffusion_generate_and_score(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    runs = ["--runs-dir", str(tmp_path / "runs")]
    cli("train", "configs/mnist-classifier.yaml", "model.name=cnn_tiny", *DIGITS, *runs)
    out = cli(
        "train",
        "configs/mnist-ddpm.yaml",
        "model.name=diffusion_unet_tiny",
        "data.batch_size=64",
        *DIGITS,
        *runs,
    ).stdout
    run = _run_id(out)
    png = tmp_path / "sevens.png"
    made = cli(
        "generate", run, "--class", "7", "--steps", "4", "--guidance", "2", "-n", "6", "-o", str(png), *runs
    ).stdout
    assert png.read_bytes().startswith(b"\x89PNG") and "6 images of (1, 8, 8)" in made
    cli("generate", run, "--class", "all", "--steps", "2", "-n", "20", "-o", str(tmp_path / "all.png"), *runs)
    scored = cli("score", run, "--n", "40", "--steps", "4", "--guidance", "2", *runs).stdout
    for row in ("samples", "real (held-out)", "gaussian mixture", "noise", "accuracy per class asked"):
        assert row in scored, scored
    assert (tmp_path / "runs" / run / "score.json").is_file()
    # what a user can get wrong: one line each, exit 2
    assert "out of range" in _error(cli("generate", run, "--class", "12", "--steps", "2", *runs, check=False))
    assert "neither a class id nor a class name" in _error(
        cli("generate", run, "--class", "seven", *runs, check=False)
    )
    assert "guidance needs a condition" in _error(cli("generate", run, "--guidance", "3", *runs, check=False))
    # the text-conditioned recipe starts from this run's U-Net: only the phrase encoder is new
    tuned = cli(
        "train", "configs/mnist-text-ddpm.yaml", "model.name=diffusion_unet_tiny", *DIGITS, *runs
    ).stdout
    assert f"initialised from {run}/model.safetensors" in tuned and "new: net.label.embed.weight" in tuned, (
        tuned
    )
    text = _run_id(tuned)
    prompt = [
        "--prompt",
        "handwritten number 7",
        "--steps",
        "3",
        "--guidance",
        "2",
        "-o",
        str(tmp_path / "t.png"),
    ]
    cli("generate", text, *prompt, *runs)


@pytest.mark.slow
def test_vae_gan_and_captioner(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    runs = ["--runs-dir", str(tmp_path / "runs")]
    vae = _run_id(
        cli(
            "train", "configs/digits-vae.yaml", "model.name=vae_tiny", "task.iwae_samples=5", *DIGITS, *runs
        ).stdout
    )
    cli("generate", vae, "-n", "16", "--nrow", "8", "-o", str(tmp_path / "vae.png"), *runs)
    with Image.open(tmp_path / "vae.png") as grid:  # 8 columns by 2 rows of 28-pixel images
        assert grid.width > 3 * grid.height
    morph = cli("generate", vae, "--interpolate", "3,8", "-o", str(tmp_path / "morph.png"), *runs).stdout
    assert "64 images" in morph  # 8 rows of 8 steps
    rebuilt = cli(
        "generate", vae, "--reconstruct", "-n", "16", "-o", str(tmp_path / "recon.png"), *runs
    ).stdout
    assert "16 images" in rebuilt  # 8 held-out images, each over its reconstruction
    assert "not class-conditional" in _error(cli("generate", vae, "--class", "3", *runs, check=False))
    assert "has no option --guidance" in _error(cli("generate", vae, "--guidance", "3", *runs, check=False))
    assert "cannot caption" in _error(cli("caption", vae, str(tmp_path / "vae.png"), *runs, check=False))

    gan_options = ["model.name=dcgan_tiny", "model.width=4", "model.latent_dim=8", "data.batch_size=64"]
    gan = _run_id(cli("train", "configs/fashion-dcgan.yaml", *gan_options, *DIGITS, *runs).stdout)
    cli("generate", gan, "-n", "9", "-o", str(tmp_path / "gan.png"), *runs)
    assert "cannot reconstruct" in _error(cli("generate", gan, "--reconstruct", *runs, check=False))

    caption_options = ["model.name=captioner_tiny", "model.phrases=digits"]
    captioner = _run_id(
        cli("train", "configs/fashion-captioner.yaml", *caption_options, *DIGITS, *runs).stdout
    )
    said = cli(
        "caption", captioner, str(tmp_path / "vae.png"), str(tmp_path / "gan.png"), *runs
    ).stdout.splitlines()
    assert [line.split(":")[0] for line in said] == [str(tmp_path / "vae.png"), str(tmp_path / "gan.png")]
    assert "cannot sample images" in _error(cli("score", captioner, *runs, check=False))
    assert "not found" in _error(cli("caption", captioner, str(tmp_path / "none.png"), *runs, check=False))
