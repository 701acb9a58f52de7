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
SHRINK: dict[str, list[str]] = {
    "digits-cnn.yaml": ["model.name=cnn_tiny"],
    # the real 70,000 images (fetched once into the data cache); a tiny ResNet scores val and test
    "fashion-resnet.yaml": ["model.name=resnet_tiny", "model.width=8", "data.batch_size=32"],
    "digit-detect.yaml": [*SCENES, "model.name=centernet_tiny"],
    "digit-segment.yaml": [*SCENES, "model.name=unet_tiny"],
    # the recipe pointed at a small local text (Shakespeare itself is a download)
    "shakespeare-char-gpt.yaml": [*GPT, "data.name=text", "data.path={corpus}"],
    "code-gpt.yaml": [*GPT, "data.max_files=10", "data.vocab_size=400"],
}


def _generic(config: Path) -> list[str]:
    """A tiny model variant when the recipe's family registers one."""
    import yaml

    from ember import models

    name = (yaml.safe_load(config.read_text()).get("model") or {}).get("name", "")
    return [f"model.name={name}_tiny"] if f"{name}_tiny" in models.list_models() else []


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS)
def test_config_trains_through_the_cli(cli, config: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
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
