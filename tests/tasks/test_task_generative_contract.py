"""The generative tasks through the lifecycle contract: images from /v1/generate's function, no
/v1/predict for samplers (NotApplicable with advice), export of the network a sampler repeats,
captions through /v1/predict, the checks each family takes, the report's sample grid."""

from __future__ import annotations

import pytest
import torch

from ember import models, tasks
from ember.tasks import contract
from ember.tasks.spec import InputSpec, ModelSpec, NotApplicable

IMAGE = InputSpec("image", (1, 8, 8))


def _pair(task: str, model: str, **kwargs: object) -> tuple[object, torch.nn.Module, ModelSpec]:
    spec = ModelSpec(task=task, inputs=IMAGE, model=model, kwargs={"image_size": 8, **kwargs})
    return tasks.create(task), models.create(model, image_size=8, **kwargs).eval(), spec


GENERATORS = [
    ("autoencoder", "vae_tiny", {}),
    ("gan", "dcgan_tiny", {}),
    ("diffusion", "diffusion_unet_tiny", {"condition": "class", "num_classes": 3}),
]


@pytest.mark.parametrize("task_name,model_name,kwargs", GENERATORS)
def test_generators_make_seeded_images_and_refuse_predict_and_export(
    task_name: str, model_name: str, kwargs: dict[str, object]
) -> None:
    task, model, spec = _pair(task_name, model_name, **kwargs)
    assert contract.makes_images(task)
    options = {"steps": 2} if "steps" in contract.sample_options(task) else {}
    a = contract.generate_images(task, model, 3, seed=5, **options)
    b = contract.generate_images(task, model, 3, seed=5, **options)
    assert a.shape == (3, 1, 8, 8) and torch.equal(a, b) and 0 <= float(a.min()) <= float(a.max()) <= 1
    with pytest.raises(NotApplicable, match="/v1/generate"):
        contract.decode(task, a, spec)
    network = contract.export_module(task, model, spec)  # the one call a sampler repeats
    inputs = contract.example_inputs(task, spec, 3)
    assert network(*inputs).shape == (3, 1, 8, 8) and not contract.profiles_inputs(task)
    with pytest.raises(ValueError, match="no option colour"):
        contract.generate_images(task, model, 1, colour=3)
    with pytest.raises(NotApplicable, match="distill"):
        contract.distill_loss(task, a, a, a)


def test_a_classifier_makes_no_images() -> None:
    task, model = tasks.create("classification"), models.create("cnn_tiny", image_size=8, in_channels=1)
    assert not contract.makes_images(task) and contract.sample_options(task) == ()
    with pytest.raises(NotApplicable, match="does not make images"):
        contract.generate_images(task, model, 1)


def test_report_samples_give_a_column_per_class() -> None:
    task, model, spec = _pair("diffusion", "diffusion_unet_tiny", condition="class", num_classes=3)
    images, nrow, caption = contract.report_samples(task, model, spec)
    assert images.shape == (24, 1, 8, 8) and nrow == 3 and "each class" in caption
    task, model, spec = _pair("gan", "dcgan_tiny")
    images, nrow, _ = contract.report_samples(task, model, spec)
    assert images.shape == (64, 1, 8, 8) and nrow == 8


def test_checks_each_family_takes_and_why_not() -> None:
    gan = contract.inapplicable_checks(tasks.create("gan"))
    assert set(gan) == {"overfitting", "imbalance"} and "ember score" in gan["overfitting"]
    assert set(contract.inapplicable_checks(tasks.create("diffusion"))) == {"imbalance"}
    assert contract.inapplicable_checks(tasks.create("captioning")) == {}


def test_a_captioner_answers_predict_with_phrases() -> None:
    spec = ModelSpec(task="captioning", inputs=IMAGE, model="captioner_tiny", kwargs={"image_size": 8})
    task, model = tasks.create("captioning"), models.create("captioner_tiny", image_size=8).eval()
    module = contract.export_module(task, model, spec)
    (images,) = contract.example_inputs(task, spec, 2)
    answer = contract.decode(task, module(images), spec)
    assert answer["captions"] == task.caption(model, images)  # the greedy captions, as ember caption
