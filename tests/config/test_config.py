from pathlib import Path

import pytest

from ember.config import (
    Config,
    ConfigError,
    TrainerConfig,
    describe,
    diff,
    dump_yaml,
    field_docs,
    load_config,
)


def test_defaults_and_overrides() -> None:
    cfg = load_config(None, ["trainer.epochs=3", "optim.lr=0.01", "data.augment=[crop, cutout]"])
    assert cfg.trainer.epochs == 3
    assert cfg.optim.lr == 0.01
    assert cfg.data.augment == ("crop", "cutout")
    assert isinstance(cfg, Config)


def test_typo_names_the_key_and_the_close_match() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown config key 'trainer.epoch'.*did you mean 'trainer.epochs'"
    ):
        load_config(None, ["trainer.epoch=3"])
    with pytest.raises(ConfigError, match=r"unknown config key 'trainr'.*did you mean 'trainer'"):
        load_config({"trainr": {"epochs": 1}})


def test_wrong_type_names_key_value_and_expected_type() -> None:
    with pytest.raises(ConfigError, match=r"trainer.epochs='three': expected an integer"):
        load_config(None, ["trainer.epochs=three"])
    with pytest.raises(ConfigError, match=r"optim.lr=True: expected a number"):
        load_config({"optim": {"lr": True}})
    with pytest.raises(ConfigError, match=r"trainer.precision='bf61' is not one of .*did you mean 'bf16'"):
        load_config(None, ["trainer.precision=bf61"])


def test_open_sections_collect_builder_options() -> None:
    cfg = load_config({"model": {"name": "resnet", "width": 16}, "task": {"label_smoothing": 0.1}})
    assert cfg.model.options == {"width": 16}
    assert cfg.task.options == {"label_smoothing": 0.1}


def test_yaml_file_round_trip_and_name(tmp_path: Path) -> None:
    path = tmp_path / "my-recipe.yaml"
    path.write_text("trainer:\n  epochs: 4\nmodel:\n  name: mlp\n  hidden: [32, 32]\n")
    cfg = load_config(path)
    assert cfg.name == "my-recipe"
    again = load_config(__import__("yaml").safe_load(dump_yaml(cfg)))
    assert again == cfg
    assert diff(cfg, again) == []
    changed = load_config(path, ["trainer.epochs=5"])
    assert diff(cfg, changed) == ["trainer.epochs: 4 -> 5"]


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        load_config(bad)


def test_every_field_is_documented() -> None:
    docs = field_docs(TrainerConfig)
    assert "epochs" in docs and "precision" in docs
    text = describe()
    assert "trainer.clip_grad_norm" in text and "optim.lr" in text
    assert "(default" in text


def test_bad_override_syntax() -> None:
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["trainer.epochs"])


def test_every_shipped_config_loads(repo_root: Path) -> None:
    paths = sorted((repo_root / "configs").glob("*.yaml"))
    assert paths
    for path in paths:
        load_config(path)
