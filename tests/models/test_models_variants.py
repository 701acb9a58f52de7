"""Families and variants: every zoo name builds the model it always built, and options are the
config's fields.

FINGERPRINTS holds, for every registered name, the model's class, its number of state-dict tensors
and a hash of their names and shapes plus the resolved config, recorded from the hand-written
builders before the zoo became families and variants. Adding a model adds its line: run
``python tests/models/test_models_variants.py`` and paste what it prints for the new name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json

import pytest
import torch
from torch import nn

from ember import models
from ember.config import field_docs
from ember.models._zoo import register_variant

FINGERPRINTS = {
    "autoencoder": ("AutoEncoder", 16, "8fa81ba3e205e35c"),
    "autoencoder_tiny": ("AutoEncoder", 16, "bd1d1e9dd3abb911"),
    "captioner": ("Captioner", 71, "68d6ef02b9778526"),
    "captioner_tiny": ("Captioner", 51, "04b34f8279082ba8"),
    "centernet": ("CenterNet", 102, "34d83dffb1551c67"),
    "centernet_tiny": ("CenterNet", 78, "3592a853dc9bdfc3"),
    "cnn": ("CNN", 38, "59ae38deb2f707da"),
    "cnn_tiny": ("CNN", 14, "b2e2b2d11c5afaa8"),
    "convattn": ("ConvAttn", 83, "09937a9b17333718"),
    "convattn_tiny": ("ConvAttn", 53, "a5648e4e0bdd3ee2"),
    "dcgan": ("DCGAN", 53, "bce1683c387c77e7"),
    "dcgan_tiny": ("DCGAN", 53, "448305e9f88195b7"),
    "diffusion_unet": ("DiffusionModel", 337, "e848e9ba4aedb9b9"),
    "diffusion_unet_tiny": ("DiffusionModel", 257, "f4855f4aeddb13f0"),
    "dp_cnn": ("DPCNN", 8, "70fa00f1e7e1e409"),
    "dp_cnn_tiny": ("DPCNN", 8, "4c84ada9b8ade9d2"),
    "encoder_decoder": ("EncoderDecoder", 101, "76c24d1000248e64"),
    "encoder_decoder_tiny": ("EncoderDecoder", 37, "c18330082a20726e"),
    "gpt": ("GPT", 52, "56259413721a16ae"),
    "gpt_classifier": ("GPTClassifier", 54, "4342b02613ceb712"),
    "gpt_classifier_tiny": ("GPTClassifier", 30, "4283ee8fb6c11ee0"),
    "gpt_small": ("GPT", 148, "c000153593ca282a"),
    "gpt_tiny": ("GPT", 28, "bd6a4719370573ff"),
    "mlp": ("MLP", 6, "21db195770913b41"),
    "mlp_tiny": ("MLP", 5, "e5f46085080472ef"),
    "mobilenet": ("MobileNet", 156, "73f665764acb9903"),
    "mobilenet_tiny": ("MobileNet", 68, "1cdee46734e4c2e7"),
    "resnet": ("ResNet", 92, "f755560e548e733a"),
    "resnet18": ("ResNet", 122, "1bf0fb3203c47d9e"),
    "resnet_tiny": ("ResNet", 38, "56164b324d44a6e7"),
    "rnn_classifier": ("RNNClassifier", 11, "9d5ea572729132a6"),
    "rnn_classifier_tiny": ("RNNClassifier", 11, "9421f96571f6b34d"),
    "rnn_lm": ("RNNLanguageModel", 11, "96573e8ca6cb6aef"),
    "rnn_lm_tiny": ("RNNLanguageModel", 11, "cc9a4a445b093d12"),
    "tabular_mlp": ("TabularMLP", 20, "f8426cafd99687db"),
    "tabular_mlp_tiny": ("TabularMLP", 11, "2ecf860eb1ae7608"),
    "transformer_encoder": ("TransformerEncoderClassifier", 54, "70c8520455202cce"),
    "transformer_encoder_tiny": ("TransformerEncoderClassifier", 18, "9d0d77386fbdfdbd"),
    "unet": ("UNet", 92, "15d55c94872215a2"),
    "unet_tiny": ("UNet", 66, "dbbae544e4c310fd"),
    "vae": ("AutoEncoder", 16, "11dc20ea00de2bd4"),
    "vae_tiny": ("AutoEncoder", 16, "19fed1e54390e319"),
    "vit": ("ViT", 81, "d971e5b23556199f"),
    "vit_tiny": ("ViT", 21, "1797c10b46b73713"),
}


# Families whose defaults have no inputs (a table model's come from the data's encoder)
INPUTS = {"tabular_mlp": {"num_numeric": 3, "cardinalities": (4, 9)}}


def _build(name: str) -> nn.Module:
    kwargs = INPUTS.get(name.removesuffix("_tiny"), {})
    try:
        with torch.device("meta"):  # no memory, no init time: gpt_small has 124 M weights
            return models.create(name, **kwargs)
    except NotImplementedError:  # an __init__ that reads a tensor's values (ViT's drop-path rates)
        return models.create(name, **kwargs)


def fingerprint(name: str) -> tuple[str, int, str]:
    """(class, tensors, hash of the state dict's names and shapes and of the config) of ``create(name)``."""
    model = _build(name)
    shapes = [[key, list(value.shape)] for key, value in model.state_dict().items()]
    config = getattr(model, "config", None)
    config_text = repr(dataclasses.asdict(config)) if dataclasses.is_dataclass(config) else ""
    digest = hashlib.sha256(json.dumps([shapes, config_text]).encode()).hexdigest()[:16]
    return type(model).__name__, len(shapes), digest


def test_every_name_has_a_fingerprint() -> None:
    names = set(models.list_models())
    assert names == set(FINGERPRINTS), (
        f"new: {sorted(names - set(FINGERPRINTS))}, gone: {sorted(set(FINGERPRINTS) - names)}; "
        "run python tests/models/test_models_variants.py for the lines"
    )


@pytest.mark.parametrize("name", sorted(FINGERPRINTS))
def test_each_name_builds_what_it_always_built(name: str) -> None:
    assert fingerprint(name) == FINGERPRINTS[name]


def test_each_config_field_has_a_docstring() -> None:
    configs = set()
    for name in models.list_models():
        config = getattr(_build(name), "config", None)
        assert dataclasses.is_dataclass(config), f"{name}: the model keeps no config dataclass"
        configs.add(type(config))
    for config in configs:
        docs: dict[str, str] = {}
        for cls in reversed(config.__mro__[:-1]):  # inherited fields are documented where declared
            docs.update(field_docs(cls))
        undocumented = [f.name for f in dataclasses.fields(config) if not docs.get(f.name)]
        assert not undocumented, f"{config.__name__} fields without a docstring: {undocumented}"


def test_options_are_the_config_fields() -> None:
    builder = models.registry.get("resnet18")
    assert set(inspect.signature(builder).parameters) == {
        f.name for f in dataclasses.fields(models.ResNetConfig)
    }
    assert inspect.signature(builder).parameters["width"].default == 64
    classifier = set(inspect.signature(models.registry.get("gpt_classifier")).parameters)
    assert "num_classes" in classifier and "tie_weights" not in classifier  # unused by the classifier


def test_an_unknown_option_names_the_closest_field() -> None:
    with pytest.raises(TypeError, match=r"model 'resnet18' has no option 'widht'; did you mean 'width'\?"):
        models.create("resnet18", widht=8)
    with pytest.raises(TypeError, match="did you mean 'depths'"):
        models.registry.get("resnet_tiny")(depth=[1, 1])  # the builder itself checks too


def test_a_variant_can_only_override_fields() -> None:
    with pytest.raises(TypeError, match=r"overrides \['widht'\]"):
        register_variant("resnet_typo", models.ResNetConfig, "never registered", widht=3)
    assert "resnet_typo" not in models.registry


def test_every_variant_has_a_description() -> None:
    for name in models.list_models():
        line = models.registry.description(name)
        assert line and len(line) < 120, f"{name}: '{line}'"


def test_variant_builds_a_plain_module() -> None:
    model = models.create("mlp_tiny", in_channels=1, image_size=8, width=12)
    assert isinstance(model, nn.Module) and model.config.width == 12 and model.config.norm == "layer"


if __name__ == "__main__":
    for model_name in models.list_models():
        print(f"    {model_name!r}: {fingerprint(model_name)!r},")
