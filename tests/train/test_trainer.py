from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ember.track import RunStore
from ember.train import NonFiniteLossError, Trainer, load_checkpoint


def _mlp(out: int = 3, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, out))


def test_fit_learns_and_records_the_run(toy_data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = toy_data
    trainer = Trainer(_mlp(), lr=0.01, epochs=5, batch_size=16, schedule="cosine", warmup=0.1, log_every=2)
    result = trainer.fit((x, y), (x, y))
    assert result.metrics["val/accuracy"] > 0.9
    assert result.steps == 5 * 6
    assert result.best is not None and result.best_step is not None
    record = RunStore().get(result.run_id)
    assert record.status == "completed" and record.data_sha256
    assert record.headline == "val/accuracy" and record.best == result.best
    names = {name for _, _, name, _ in RunStore().metrics(result.run_id)}
    assert {"train/loss", "lr", "val/accuracy", "val/loss"} <= names
    assert (result.run_dir / "model.safetensors").is_file()
    assert (result.run_dir / "metrics.jsonl").read_text().count("\n") > 5
    assert trainer.test((x, y))["accuracy"] == pytest.approx(result.metrics["val/accuracy"])
    assert trainer.predict(x).shape == (96, 3)


def test_lr_follows_the_schedule(toy_data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = toy_data
    seen: list[float] = []

    class Spy:
        def on_step_end(self, state) -> None:  # type: ignore[no-untyped-def]
            seen.append(state.lr)

    Trainer(_mlp(), lr=0.1, epochs=2, batch_size=16, schedule="linear", warmup=3, callbacks=[Spy()]).fit(
        (x, y)
    )
    assert seen[0] == pytest.approx(0.1 * 2 / 4) and seen[2] == pytest.approx(0.1)
    assert seen[-1] == pytest.approx(0.0, abs=1e-12)


def test_accumulation_equals_a_big_batch() -> None:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(256, 8, generator=g), torch.randint(0, 3, (256,), generator=g)
    big = Trainer(_mlp(), optimizer="sgd", lr=0.5, epochs=1, batch_size=128)
    big.fit((x, y))
    small = Trainer(_mlp(), optimizer="sgd", lr=0.5, epochs=1, batch_size=32, accumulate=4)
    result = small.fit((x, y))
    assert result.steps == 2
    for a, b in zip(big.model.parameters(), small.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["norm", "value"])
def test_gradient_clipping(toy_data: tuple[torch.Tensor, torch.Tensor], kind: str) -> None:
    x, y = toy_data
    model = _mlp()
    before = [p.detach().clone() for p in model.parameters()]
    option = {"clip_grad_norm": 1e-3} if kind == "norm" else {"clip_grad_value": 1e-4}
    Trainer(model, optimizer="sgd", lr=1.0, max_steps=1, batch_size=96, **option).fit((x * 100, y))
    deltas = [p.detach() - b for p, b in zip(model.parameters(), before)]
    if kind == "norm":
        total = torch.sqrt(sum(d.pow(2).sum() for d in deltas))
        assert total == pytest.approx(1e-3, rel=1e-3)
    else:
        assert max(d.abs().max().item() for d in deltas) == pytest.approx(1e-4, rel=1e-3)  # fp32 rounding


def test_bf16_autocast_path(toy_data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = toy_data
    model = _mlp()
    dtypes: list[torch.dtype] = []
    model[0].register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    result = Trainer(model, precision="bf16", lr=0.01, epochs=5, batch_size=16).fit((x, y), (x, y))
    assert dtypes and set(dtypes) == {torch.bfloat16}
    assert model[0].weight.dtype == torch.float32  # master weights stay fp32
    assert result.metrics["val/accuracy"] > 0.9


def test_fp16_on_cpu_is_refused_with_advice() -> None:
    if torch.cuda.is_available():
        pytest.skip("fp16 is allowed on CUDA")
    with pytest.raises(ValueError, match="use precision=bf16"):
        Trainer(_mlp(), precision="fp16")


def test_early_stopping_on_a_metric(toy_data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = toy_data
    trainer = Trainer(
        _mlp(), lr=0.0, epochs=20, batch_size=32, early_stopping_metric="val/loss", early_stopping_patience=2
    )
    result = trainer.fit((x, y), (x, y))
    assert len(result.history) == 3
    assert "early stopping" in result.stop_reason


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(
    toy_data: tuple[torch.Tensor, torch.Tensor],
) -> None:
    x, y = toy_data

    class BreaksAtStep(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = _mlp()
            self.calls = 0

        def forward(self, inp: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            out = self.net(inp)
            return out * float("nan") if self.calls == 8 else out

    trainer = Trainer(
        BreaksAtStep(),
        lr=0.01,
        epochs=5,
        batch_size=16,
        checkpoint_every=5,
        checkpoint_min_interval=0,
        log_every=100,
    )
    with pytest.raises(NonFiniteLossError, match="optimizer step 8"):
        trainer.fit((x, y))
    assert trainer.run is not None
    record = RunStore().get(trainer.run.id)
    assert record.status == "failed" and "step 8" in (record.error or "")
    files = sorted(p.name for p in (trainer.run.dir / "checkpoints").iterdir())
    assert files == ["step-000005.safetensors", "step-000006.safetensors"]  # every 5 steps + epoch 1's end
    good = load_checkpoint(trainer.run.dir / "checkpoints" / files[-1])
    assert all(torch.isfinite(t).all() for t in good.model.values())


def test_short_epochs_checkpoint_at_most_once_per_interval_but_always_at_the_end(
    toy_data: tuple[torch.Tensor, torch.Tensor],
) -> None:
    x, y = toy_data
    steps = -(-len(y) // 16)
    every = Trainer(_mlp(), lr=0.01, epochs=4, batch_size=16, checkpoint_min_interval=0, keep_last=10)
    every.fit((x, y))
    assert every.run is not None
    written = sorted(p.name for p in (every.run.dir / "checkpoints").iterdir())
    assert written == [f"step-{steps * e:06d}.safetensors" for e in (1, 2, 3, 4)]

    throttled = Trainer(_mlp(), lr=0.01, epochs=4, batch_size=16, checkpoint_min_interval=3600, keep_last=10)
    throttled.fit((x, y))
    assert throttled.run is not None
    written = sorted(p.name for p in (throttled.run.dir / "checkpoints").iterdir())
    assert written == [f"step-{steps * 4:06d}.safetensors"]  # only the last epoch's


def test_a_new_best_is_written_even_inside_the_interval(toy_data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = toy_data
    trainer = Trainer(_mlp(), lr=0.05, epochs=5, batch_size=16, checkpoint_min_interval=3600, keep_last=1)
    result = trainer.fit((x, y), (x, y))
    assert trainer.run is not None and result.best_step is not None
    written = {p.name for p in (trainer.run.dir / "checkpoints").iterdir()}
    assert f"step-{result.best_step:06d}.safetensors" in written


class _MapStyle(Dataset):  # type: ignore[type-arg]
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


def test_any_dataset_or_dataloader_works(toy_data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = toy_data
    r1 = Trainer(_mlp(), lr=0.01, epochs=4, batch_size=16).fit(_MapStyle(x, y), TensorDataset(x, y))
    r2 = Trainer(_mlp(), lr=0.01, epochs=4).fit(
        DataLoader(_MapStyle(x, y), batch_size=16, shuffle=True), (x, y)
    )
    assert r1.metrics["val/accuracy"] > 0.8 and r2.metrics["val/accuracy"] > 0.8


def test_unknown_trainer_option_suggests() -> None:
    with pytest.raises(TypeError, match="did you mean 'epochs'"):
        Trainer(_mlp(), epoch=3)


def test_regression_task(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 8, generator=g)
    y = x @ torch.randn(8, generator=g)
    torch.manual_seed(0)
    result = Trainer(nn.Linear(8, 1), task="regression", lr=0.05, epochs=30, batch_size=32).fit(
        (x, y), (x, y)
    )
    assert result.metrics["val/r2"] > 0.95


def test_typed_sections_and_flat_keywords_are_one_entrance(
    toy_data: tuple[torch.Tensor, torch.Tensor],
) -> None:
    from ember.config import ConfigError, OptimConfig, TrainerConfig

    typed = Trainer(_mlp(), optim=OptimConfig(name="sgd", lr=0.05), trainer=TrainerConfig(epochs=2, seed=3))
    flat = Trainer(_mlp(), optimizer="sgd", lr=0.05, epochs=2, seed=3)
    assert typed.config == flat.config
    both = Trainer(_mlp(), optim=OptimConfig(name="sgd"), lr=0.2)  # a keyword refines its section
    assert (both.config.optim.name, both.config.optim.lr) == ("sgd", 0.2)
    with pytest.raises(TypeError, match="did you mean 'epochs'"):
        Trainer(_mlp(), epoch=3)
    with pytest.raises(ConfigError, match="optim.lr='fast'"):
        Trainer(_mlp(), lr="fast")
    with pytest.raises(TypeError, match="takes a OptimConfig"):
        Trainer(_mlp(), optim=TrainerConfig())  # type: ignore[arg-type]
    x, y = toy_data
    a, b = typed.fit((x, y)), flat.fit((x, y))
    assert a.steps == b.steps and a.run_id != b.run_id  # each fit made its own run, no start_run needed
    for p, q in zip(typed.model.parameters(), flat.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_a_run_handed_over_is_the_one_trained_into(toy_data: tuple[torch.Tensor, torch.Tensor]) -> None:
    run = RunStore().create("handed", config_yaml="{}", params={})
    result = Trainer(_mlp(), epochs=1, run=run).fit(toy_data)
    assert result.run_id == run.id and RunStore().get(run.id).status == "completed"


def test_a_python_run_keeps_what_the_later_stages_need(toy_data: tuple[torch.Tensor, torch.Tensor]) -> None:
    import ember
    from ember.recipe import load_run

    x, y = toy_data
    model = ember.models.create("mlp_tiny", in_channels=8, image_size=1, num_classes=3)
    trainer = Trainer(model, lr=0.01, epochs=3, batch_size=16)
    result = trainer.fit((x[:64], y[:64]), (x[64:80], y[64:80]))
    trainer.test((x[80:], y[80:]))
    run = load_run(result.run_id)
    assert (
        run.spec.model == "mlp_tiny"
        and run.spec.inputs.kind == "table"
        and run.spec.classes == ["0", "1", "2"]
    )
    assert run.available_splits() == ["train", "val", "test"]
    assert torch.equal(run.split("test").x, x[80:])
    for p, q in zip(run.model.parameters(), trainer.model.parameters(), strict=True):
        assert torch.equal(p, q.cpu())
    again = ember.evaluate_run(result.run_id, "test")
    assert again["accuracy"] == pytest.approx(trainer.validate((x[80:], y[80:]))["accuracy"])


def test_a_python_run_says_which_split_it_could_not_keep(toy_data: tuple[torch.Tensor, torch.Tensor]) -> None:
    from ember import models as ember_models
    from ember.recipe import load_run

    class Pairs(Dataset):  # items that are not (x, y) tensor pairs cannot be kept
        def __len__(self) -> int:
            return 32

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            return toy_data[0][i], int(toy_data[1][i])

    model = ember_models.create("mlp_tiny", in_channels=8, image_size=1, num_classes=3)
    result = Trainer(model, epochs=1, batch_size=8).fit(Pairs())
    with pytest.raises(ValueError, match="no 'train' split .*not \\(x, y\\) tensor pairs"):
        load_run(result.run_id, data=False).split("train")
