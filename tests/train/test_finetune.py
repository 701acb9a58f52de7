"""Fine-tuning: load by name and shape, freeze, per-group learning rates, LoRA runs, and transfer."""

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from ember import models
from ember.config import ConfigError, ModelConfig, OptimConfig, load_config
from ember.nn import lora
from ember.train import checkpoint as ckpt
from ember.train.finetune import (
    MergeLoRA,
    PretrainedError,
    finetune_model,
    freeze,
    load_pretrained,
    unfreeze,
)
from ember.train.optim import build_optimizer
from ember.train.trainer import Trainer

V = 20


def _lm(**options: Any) -> torch.nn.Module:
    torch.manual_seed(1)
    return models.create("gpt_tiny", vocab_size=V, **options)


def _classifier(**options: Any) -> torch.nn.Module:
    torch.manual_seed(0)
    return models.create("gpt_classifier_tiny", vocab_size=V, num_classes=3, **options)


def test_load_by_name_reports_loaded_missing_unexpected_and_mismatched() -> None:
    lm = _lm(tie_weights=False)  # its own output layer: head.weight (V, C), as a classifier's is (K, C)
    weights = {**lm.state_dict(), "extra.weight": torch.zeros(2)}
    model = _classifier()
    report = load_pretrained(model, weights)
    assert report.mismatched == [("head.weight", (V, 32), (3, 32))]
    assert report.missing == ["head.bias"]
    assert report.unexpected == ["extra.weight"]
    assert set(report.loaded) == set(lm.state_dict()) - {"head.weight"}
    state = model.state_dict()
    assert all(torch.equal(state[n], weights[n]) for n in report.loaded)
    assert not torch.equal(state["head.weight"][:3], weights["head.weight"][:3])  # left as built
    assert "shape mismatch, not loaded: head.weight [20, 32] -> [3, 32]" in report.summary()
    ignored = load_pretrained(_classifier(), weights, ignore=["head", "blocks.1"])
    assert "head.weight" in ignored.ignored and not ignored.mismatched
    assert not any(n.startswith("blocks.1") for n in ignored.loaded)


def test_weights_come_from_files_checkpoints_runs_and_run_folders(tmp_path: Path) -> None:
    lm = _lm()
    expected = {k: v.clone() for k, v in lm.state_dict().items()}
    save_file(dict(expected), tmp_path / "lm.safetensors")
    ckpt.save_checkpoint(tmp_path / "step-000001.safetensors", model=lm, meta={"step": 1})
    x = torch.randint(0, V, (16, 9))
    result = Trainer(lm, task="language_model", epochs=1, batch_size=8, runs_dir=tmp_path / "runs",
                     progress=False, name="lm").fit((x[:, :-1], x[:, 1:]))  # fmt: skip
    trained = lm.state_dict()
    sources = {
        str(tmp_path / "lm.safetensors"): expected,
        str(tmp_path / "step-000001.safetensors"): expected,  # an ember checkpoint: its model part
        result.run_id[:12]: trained,  # a run id prefix
        "latest:lm": trained,
        str(result.run_dir): trained,  # a run folder
    }
    for source, want in sources.items():
        model = _classifier()
        report = load_pretrained(model, source, runs_dir=tmp_path / "runs")
        assert report.missing == ["head.weight", "head.bias"], source
        assert torch.equal(model.state_dict()["blocks.1.mlp.fc.weight"], want["blocks.1.mlp.fc.weight"]), (
            source
        )
    with pytest.raises(PretrainedError, match="no such file or folder, and no run"):
        load_pretrained(_classifier(), "nonexistent-run", runs_dir=tmp_path / "runs")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(PretrainedError, match="not a readable .safetensors file"):
        load_pretrained(_classifier(), tmp_path / "junk.safetensors")


def test_freeze_leaves_frozen_weights_unchanged_after_steps(tmp_path: Path) -> None:
    model = _classifier()
    assert len(freeze(model, ["*"])) == len(list(model.parameters()))
    assert unfreeze(model, ["head", "blocks.1.mlp"]) == [
        "blocks.1.mlp.fc.weight", "blocks.1.mlp.fc.bias", "blocks.1.mlp.proj.weight", "blocks.1.mlp.proj.bias",
        "head.weight", "head.bias",
    ]  # fmt: skip
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, y = torch.randint(1, V, (64, 12)), torch.randint(0, 3, (64,))
    Trainer(model, lr=0.01, weight_decay=0.1, epochs=2, batch_size=16, runs_dir=tmp_path,
            progress=False).fit((x, y))  # fmt: skip
    for name, p in model.named_parameters():
        moved = not torch.equal(p.detach(), before[name])
        assert moved == p.requires_grad, name  # decay touches no frozen weight either


def test_freeze_patterns_are_checked() -> None:
    with pytest.raises(
        ValueError, match="freeze pattern 'block.0' matches no parameter; did you mean 'blocks.0'"
    ):
        freeze(_classifier(), ["block.0"])


def test_per_group_learning_rates_land_in_the_optimizer(tmp_path: Path) -> None:
    model = _classifier()
    cfg = OptimConfig(name="adamw", lr=0.001, weight_decay=0.1, lr_groups={"head": 0.01, "blocks.0": 0.003})
    opt = build_optimizer(model, cfg)
    seen = {id(p): (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}
    assert len(seen) == len(list(model.parameters()))
    params = dict(model.named_parameters())
    assert seen[id(params["head.weight"])] == (0.01, 0.1)
    assert seen[id(params["head.bias"])] == (0.01, 0.0)  # no decay on biases and norms, as always
    assert seen[id(params["blocks.0.attn.qkv.weight"])] == (0.003, 0.1)
    assert seen[id(params["blocks.0.norm1.weight"])] == (0.003, 0.0)
    assert seen[id(params["blocks.1.attn.qkv.weight"])] == (0.001, 0.1)
    assert seen[id(params["tok_emb.weight"])] == (0.001, 0.1)

    # through the Trainer: the schedule scales each group from its own base lr
    class Record:
        lrs: dict[int, dict[float, float]] = {}

        def on_step_end(self, state: Any) -> None:
            Record.lrs[state.step] = {g["base_lr"]: g["lr"] for g in state.optimizer.param_groups}

    config = load_config(
        {"optim": {"lr": 0.001, "lr_groups": {"head": 0.01}}, "schedule": {"name": "linear"}}
    )
    x, y = torch.randint(1, V, (32, 12)), torch.randint(0, 3, (32,))
    Trainer(_classifier(), config=config, epochs=1, batch_size=8, runs_dir=tmp_path, progress=False,
            callbacks=[Record()]).fit((x, y))  # fmt: skip
    assert Record.lrs[2] == pytest.approx({0.01: 0.01 * 0.5, 0.001: 0.001 * 0.5})  # after 2 of 4 steps
    with pytest.raises(ValueError, match="optim.lr_groups pattern 'heads' matches no trainable parameter"):
        build_optimizer(_classifier(), OptimConfig(lr_groups={"heads": 0.01}))


def test_config_keys_for_fine_tuning_are_checked() -> None:
    cfg = load_config(
        {}, ["model.lora.rank=4", "model.freeze=[tok_emb, blocks.0]", "optim.lr_groups={head: 1}"]
    )
    assert cfg.model.lora.rank == 4 and cfg.model.freeze == ("tok_emb", "blocks.0")
    assert cfg.optim.lr_groups == {"head": 1.0}
    with pytest.raises(ConfigError, match="'model.lora.rnak'; did you mean 'model.lora.rank'"):
        load_config({}, ["model.lora.rnak=4"])
    with pytest.raises(ConfigError, match="optim.lr_groups.head='fast': expected a number"):
        load_config({}, ["optim.lr_groups={head: fast}"])


def test_finetune_model_loads_then_adapts_then_freezes(tmp_path: Path) -> None:
    save_file(dict(_lm().state_dict()), tmp_path / "lm.safetensors")
    model = _classifier()
    cfg = ModelConfig(
        name="gpt_classifier_tiny",
        pretrained=str(tmp_path / "lm.safetensors"),
        lora=load_config({}, ["model.lora.rank=2"]).model.lora,
        unfreeze=("head",),
    )
    report = finetune_model(model, cfg)
    assert report is not None and len(report.loaded) == len(_lm().state_dict())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert (
        trainable == {"head.weight", "head.bias"} | {n for n in trainable if n.endswith(("lora_a", "lora_b"))}
        and len(trainable) == 2 + 2 * 8
    )
    # a pretrained model of another shape is refused with what to do, not silently half-loaded
    wide = ModelConfig(name="gpt_classifier_tiny", pretrained=str(tmp_path / "lm.safetensors"))
    with pytest.raises(PretrainedError, match=r"pos_emb.weight \[32, 32\] vs \[16, 32\].*pretrained_ignore"):
        finetune_model(_classifier(block_size=16), wide)
    with pytest.raises(PretrainedError, match="shares no tensor"):
        finetune_model(models.create("mlp_tiny"), wide)


def test_a_lora_run_saves_a_plain_model_and_its_adapters(tmp_path: Path) -> None:
    model = lora.apply(_classifier(), rank=2)
    unfreeze(model, ["head"])
    x, y = torch.randint(1, V, (32, 12)), torch.randint(0, 3, (32,))
    trainer = Trainer(model, lr=0.01, epochs=1, batch_size=8, runs_dir=tmp_path, progress=False,
                      callbacks=[MergeLoRA(tmp_path / "adapters.safetensors")])  # fmt: skip
    result = trainer.fit((x, y))
    weights = load_file(result.run_dir / "model.safetensors")
    assert set(weights) == set(_classifier().state_dict())
    assert len(load_file(tmp_path / "adapters.safetensors")) == 2 * 2 * 4
    plain = _classifier()
    plain.load_state_dict(weights)
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(x), model.eval()(x))


# --------------------------------------------------------------------------- transfer

G, M, L = 4, 6, 16  # 4 classes of 6 interchangeable tokens each; sequences of 16


def _synonyms(n: int, members: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences of one class's tokens (chosen among ``members`` of each class), labelled by class."""
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, G, (n,), generator=g)
    member = torch.tensor(members)[torch.randint(0, len(members), (n, L), generator=g)]
    return 2 + label[:, None] * M + member, label


def test_fine_tuning_a_pretrained_lm_beats_training_from_scratch(tmp_path: Path) -> None:
    """Same classifier, seed, labelled data, steps and learning rate; only the trunk's start differs.

    The labelled examples use 3 of each class's 6 tokens, the test examples the other 3: a language
    model pretrained on unlabelled text of all 6 has learnt which tokens behave alike, scratch has not.
    """
    vocab = 2 + G * M
    text, _ = _synonyms(512, list(range(M)), seed=1)
    lm = models.create("gpt_tiny", vocab_size=vocab, block_size=L)
    Trainer(lm, task="language_model", lr=3e-3, epochs=2, batch_size=32, runs_dir=tmp_path, progress=False,
            name="lm").fit((text[:, :-1], text[:, 1:]))  # fmt: skip
    train, test = _synonyms(32, [0, 1, 2], seed=2), _synonyms(200, [3, 4, 5], seed=3)
    accuracy = {}
    for start in ("scratch", "pretrained"):
        torch.manual_seed(0)
        model = models.create("gpt_classifier_tiny", vocab_size=vocab, block_size=L, num_classes=G)
        if start == "pretrained":
            assert load_pretrained(model, "latest:lm", runs_dir=tmp_path).missing == [
                "head.weight",
                "head.bias",
            ]
        trainer = Trainer(model, lr=3e-3, epochs=4, batch_size=8, runs_dir=tmp_path, progress=False)
        assert trainer.fit(train).steps == 16
        accuracy[start] = trainer.validate(test)["accuracy"]
    assert accuracy["pretrained"] >= 0.9, accuracy
    assert accuracy["pretrained"] > accuracy["scratch"] + 0.3, accuracy
