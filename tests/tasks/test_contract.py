"""The lifecycle contract: specs round-trip, every family answers the contract's questions."""

from __future__ import annotations

import json

import pytest
import torch

from ember import models, tasks
from ember.tasks import contract
from ember.tasks.spec import InputSpec, ModelSpec, NotApplicable, SpecError, infer_inputs, zoo_origin

IMAGE = InputSpec("image", (1, 32, 32), value_range=(0.0, 1.0))
TOKENS = InputSpec("tokens", (16,), "int64", vocab_size=40, pad_id=0)


def spec_for(task: str, model: str, inputs: InputSpec, **kwargs: object) -> ModelSpec:
    return ModelSpec(task=task, inputs=inputs, model=model, kwargs=dict(kwargs), classes=["a", "b", "c"])


FAMILIES = {  # task -> (zoo model, its kwargs, inputs)
    "classification": ("cnn_tiny", {"in_channels": 1, "num_classes": 3, "image_size": 32}, IMAGE),
    "regression": (
        "mlp_tiny",
        {"in_channels": 5, "image_size": 1, "num_classes": 1},
        InputSpec("table", (5,)),
    ),
    "language_model": ("gpt_tiny", {"vocab_size": 40, "block_size": 16}, TOKENS),
    "seq2seq": ("encoder_decoder_tiny", {"vocab_size": 40, "max_len": 16}, TOKENS),
    "detection": ("centernet_tiny", {"num_classes": 3}, IMAGE),
    "segmentation": ("unet_tiny", {"num_classes": 3}, IMAGE),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_rebuilds_from_its_spec_and_exports_tensors(family: str) -> None:
    name, kwargs, inputs = FAMILIES[family]
    spec = spec_for(family, name, inputs, **kwargs)
    again = ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    model = again.build().eval()
    task = tasks.create(family)
    args = contract.example_inputs(task, spec, n=3, seed=1)
    assert all(a.shape[0] == 3 for a in args)
    again_args = contract.example_inputs(task, spec, n=3, seed=1)  # seeded: the same inputs again
    assert all(torch.equal(a, b) for a, b in zip(args, again_args, strict=True))
    out = contract.export_module(task, model, spec)(*args)
    flat = out if isinstance(out, tuple) else (out,)
    assert all(isinstance(t, torch.Tensor) and t.shape[0] == 3 for t in flat)  # no dicts: exportable
    try:
        answer = contract.decode(task, out, spec)
    except NotApplicable as e:  # text families point to /v1/generate
        assert family in ("language_model", "seq2seq") and "/v1/generate" in str(e)
    else:
        assert all(len(v) == 3 for v in answer.values())
    metric, mode = contract.protected_metric(task)
    assert mode in ("max", "min") and metric
    assert set(contract.applicable_checks(task)) <= set(contract.CHECKS)


def test_decoded_answers_mean_what_they_say() -> None:
    spec = spec_for("classification", "cnn_tiny", IMAGE)
    answer = contract.decode(tasks.create("classification"), torch.tensor([[0.0, 3.0, 1.0]]), spec)
    assert answer["predictions"] == [1] and answer["labels"] == ["b"]
    seg = contract.decode(
        tasks.create("segmentation"), torch.zeros(1, 3, 4, 4).index_fill(1, torch.tensor([2]), 1.0), spec
    )
    assert seg["masks"].shape == (1, 4, 4) and int(seg["masks"].max()) == 2
    heat = torch.full((1, 3, 8, 8), -9.0)
    heat[0, 1, 2, 3] = 9.0  # one confident peak of class 1 at cell (y=2, x=3)
    maps = (heat, torch.full((1, 2, 8, 8), 4.0), torch.zeros(1, 2, 8, 8))
    (found,) = contract.decode(tasks.create("detection"), maps, spec)["detections"]
    assert len(found) == 1 and found[0]["class"] == "b" and found[0]["score"] > 0.99
    assert found[0]["box"] == [10.0, 6.0, 14.0, 10.0]  # centre (3, 2) x stride 4, size 4


def test_text_families_generate_text() -> None:
    from ember.data.tokenizers import CharTokenizer

    tok = CharTokenizer.train(["hello world"])
    lm = models.create("gpt_tiny", vocab_size=tok.vocab_size, block_size=16)
    pieces = list(
        contract.generate_text(tasks.create("language_model"), lm, tok, "he", max_new_tokens=6, greedy=True)
    )
    assert 0 < len("".join(pieces)) <= 6
    with pytest.raises(NotApplicable, match="use /v1/predict"):
        contract.generate_text(tasks.create("classification"), lm, tok, "he")


def test_distillation_is_defined_where_it_means_something() -> None:
    z, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    assert float(contract.distill_loss(tasks.create("classification"), z, z, y)) >= 0
    with pytest.raises(NotApplicable, match="int8 or prune"):
        contract.distill_loss(tasks.create("detection"), z, z, y)


def test_a_task_without_lifecycle_members_gets_the_defaults() -> None:
    class Plain:
        headline, mode = "loss", "min"

    spec = ModelSpec(task="plain", inputs=InputSpec("vector", (2, 3)))
    (x,) = contract.example_inputs(Plain(), spec, n=4)
    assert x.shape == (4, 2, 3)
    assert contract.decode(Plain(), x, spec)["outputs"].shape == (4, 2, 3)
    assert contract.protected_metric(Plain()) == ("loss", "min")
    assert contract.applicable_checks(Plain()) == ("overfitting",)


def test_bad_specs_are_refused_with_the_field_named() -> None:
    with pytest.raises(SpecError, match="inputs.kind"):
        InputSpec("sound", (3,))  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="vocab_size"):
        InputSpec("tokens", (8,), "int64")
    with pytest.raises(SpecError, match="unknown spec fields"):
        ModelSpec.from_dict({**spec_for("classification", "cnn_tiny", IMAGE).to_dict(), "weights": "x"})
    with pytest.raises(SpecError, match="cannot be imported"):
        ModelSpec(task="classification", inputs=IMAGE, entry_point="no_such_pkg.mod:build").build()
    with pytest.raises(SpecError, match="cannot be rebuilt"):
        ModelSpec(task="classification", inputs=IMAGE).build()


def test_zoo_models_remember_how_they_were_built_and_inputs_are_inferred() -> None:
    model = models.create("mlp_tiny", in_channels=4, image_size=1, num_classes=2)
    assert zoo_origin(model) == ("mlp_tiny", {"in_channels": 4, "image_size": 1, "num_classes": 2})
    assert zoo_origin(torch.nn.Linear(2, 2)) is None
    assert infer_inputs(torch.rand(2, 3, 8, 8)) == InputSpec("image", (3, 8, 8), value_range=(0.0, 1.0))
    assert infer_inputs(torch.randn(2, 5)).kind == "table"
    assert infer_inputs(torch.tensor([[1, 7]]), vocab_size=50).vocab_size == 50
