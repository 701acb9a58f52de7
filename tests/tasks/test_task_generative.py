"""The generative tasks on tiny models: losses fall, bounds hold, samples repeat under a seed."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch

from ember import models, tasks
from ember.data import load_dataset
from ember.tasks.autoencoder import importance_weighted_bound
from ember.tasks.gan import GAN, diversity


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_dataset("digits").train
    return data.x[:64], data.y[:64]


def _fit(task: Any, model: torch.nn.Module, batch: Any, steps: int, lr: float = 3e-3) -> list[float]:
    """Losses of ``steps`` optimizer steps on one fixed batch (the loop's step, or the task's own)."""
    torch.manual_seed(0)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    model.train()
    for _ in range(steps):
        if hasattr(task, "train_step"):
            losses.append(float(task.train_step(model, batch, optimizer)))
            continue
        output, target = task.forward(model, batch)
        loss = task.loss(output, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if hasattr(task, "after_step"):
            task.after_step(model)
        losses.append(float(loss.detach()))
    return losses


FAMILIES = {
    "vae": ("vae_tiny", "autoencoder", {}, {}),
    "autoencoder": ("autoencoder_tiny", "autoencoder", {}, {}),
    "diffusion-class": ("diffusion_unet_tiny", "diffusion", {"condition": "class"}, {}),
    "diffusion-text-v": ("diffusion_unet_tiny", "diffusion", {"condition": "text"}, {"prediction": "v_prediction", "schedule": "cosine"}),
    "captioning": ("captioner_tiny", "captioning", {}, {}),
}  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES)
def test_loss_decreases_on_a_tiny_run(family: str, digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    name, task_name, model_options, task_options = FAMILIES[family]
    torch.manual_seed(0)
    model = models.create(name, image_size=8, **model_options)
    task = tasks.create(task_name, **task_options)
    losses = _fit(task, model, digits, steps=60)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, f"{family}: loss {first:.3f} -> {last:.3f}"


def test_gan_discriminator_learns_and_the_generator_moves(digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    torch.manual_seed(0)
    model, task = models.create("dcgan_tiny", image_size=8), GAN()
    before = [p.clone() for p in model.generator.parameters()]
    d_before = [p.clone() for p in model.discriminator.parameters()]
    losses = _fit(task, model, digits, steps=40)
    assert losses[0] == pytest.approx(2.0, abs=0.15)  # hinge near chance: D outputs ~0 on both
    assert min(losses[1:10]) < losses[0] - 0.3  # the discriminator learns (then the two contend)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.generator.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(d_before, model.discriminator.parameters()))
    assert int(model.ema_updates) == 40


def test_gan_steps_equal_two_optimizers(digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    """One optimizer over both networks, a gradient reaching one at a time, is two optimizers."""
    torch.manual_seed(0)
    model = models.create("dcgan_tiny", image_size=8, ema_decay=0.0)
    twin = models.create("dcgan_tiny", image_size=8, ema_decay=0.0)
    twin.load_state_dict(model.state_dict())
    task = GAN(loss="nonsaturating")
    groups = [
        {"params": list(model.generator.parameters()), "lr": 1e-3},
        {"params": list(model.discriminator.parameters()), "lr": 4e-3},
    ]
    torch.manual_seed(1)
    task.train_step(model, digits, torch.optim.Adam(groups, betas=(0.0, 0.9)))
    opt_g = torch.optim.Adam(twin.generator.parameters(), lr=1e-3, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(twin.discriminator.parameters(), lr=4e-3, betas=(0.0, 0.9))
    torch.manual_seed(1)  # the same latents
    real = digits[0] * 2 - 1
    fake = twin.generator(torch.randn(real.shape[0], twin.latent_dim))
    d_loss = task.d_loss(twin.discriminator(real), twin.discriminator(fake.detach()))
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
    opt_g.zero_grad()
    task.g_loss(twin.discriminator(fake)).backward()
    opt_g.step()
    for (name, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


def test_iwae_bound_is_below_the_elbo(digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    torch.manual_seed(0)
    model, task = models.create("vae_tiny", image_size=8), tasks.create("autoencoder", iwae_samples=100)
    _fit(task, model, digits, steps=100)
    model.eval()
    test = task.for_test()
    with torch.no_grad():
        output, target = test.forward(model, digits)
        ev = test.evaluation()
        ev.update(output, target, test.loss(output, target))
        metrics = ev.compute()
    assert metrics["nll_iwae"] < metrics["nelbo"]
    assert metrics["bits_per_dim_iwae"] < metrics["bits_per_dim"]
    # k = 1 is the ELBO itself (one sample): equal in expectation, close on 64 images
    with torch.no_grad():
        one = -importance_weighted_bound(model, target, 1).mean()
    assert float(one) == pytest.approx(metrics["nelbo"], rel=0.1)


SAMPLERS: dict[str, tuple[str, dict[str, Any], str, dict[str, Any]]] = {
    "vae": ("vae_tiny", {}, "autoencoder", {}),
    "gan": ("dcgan_tiny", {}, "gan", {}),
    "ddpm": ("diffusion_unet_tiny", {"condition": "class"}, "diffusion", {"sampler": "ddpm", "steps": 20}),
    "ddim-guided": (
        "diffusion_unet_tiny",
        {"condition": "class"},
        "diffusion",
        {"steps": 10, "eta": 0.5, "guidance": 3.0},
    ),
}


@pytest.mark.parametrize("family", SAMPLERS)
def test_generation_is_reproducible_under_a_seed(family: str) -> None:
    name, model_options, task_name, options = SAMPLERS[family]
    model = models.create(name, image_size=8, **model_options)
    with torch.no_grad():  # a model that is not at its initialization
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    task = tasks.create(task_name)
    labels = torch.tensor([1, 2, 3]) if task.sample_classes(model) else None

    def draw(seed: int) -> torch.Tensor:
        return task.sample(model, 3, labels=labels, generator=torch.Generator().manual_seed(seed), **options)

    first, again, other = draw(0), draw(0), draw(1)
    assert first.shape == (3, 1, 8, 8) and float(first.min()) >= 0 and float(first.max()) <= 1
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_text_conditioned_sampling_takes_prompts_and_labels() -> None:
    model = models.create("diffusion_unet_tiny", image_size=8, condition="text")
    task = tasks.create("diffusion")
    g = torch.Generator().manual_seed(0)
    assert (
        task.sample(model, 2, prompt="a seven written by hand", steps=3, guidance=2.0, generator=g).shape[0]
        == 2
    )
    assert task.sample(model, 2, labels=torch.tensor([7, 1]), steps=3, generator=g).shape[0] == 2
    assert ("a seven written by hand" in dict((p, k) for k, p in task.prompts(model))) is True
    with pytest.raises(ValueError, match="one prompt, or one per image"):
        task.sample(model, 3, prompt=["a", "b"], steps=2)


def test_sampling_errors_are_explained() -> None:
    diffusion, task = models.create("diffusion_unet_tiny", image_size=8), tasks.create("diffusion")
    with pytest.raises(ValueError, match="not class-conditional"):
        task.sample(diffusion, 2, labels=torch.tensor([1, 2]), steps=2)
    with pytest.raises(ValueError, match="guidance needs a condition"):
        task.sample(diffusion, 2, guidance=3.0, steps=2)
    with pytest.raises(ValueError, match="no prompt"):
        task.sample(diffusion, 2, prompt="a seven", steps=2)
    conditional = models.create("diffusion_unet_tiny", image_size=8, condition="class")
    with pytest.raises(ValueError, match=r"class ids must be in 0..9"):
        task.sample(conditional, 1, labels=torch.tensor([12]), steps=2)
    with pytest.raises(ValueError, match="no prior to sample from"):
        tasks.create("autoencoder").sample(models.create("autoencoder_tiny", image_size=8), 2)


def test_vae_interpolation_runs_between_two_reconstructions(
    digits: tuple[torch.Tensor, torch.Tensor],
) -> None:
    model, task = models.create("vae_tiny", image_size=8), tasks.create("autoencoder")
    a, b = digits[0][:2], digits[0][2:4]
    path = task.interpolate(model, a, b, steps=5)
    assert path.shape == (10, 1, 8, 8)
    ends = task.decode_codes(model, torch.cat([model.encode(a)[0], model.encode(b)[0]]))
    torch.testing.assert_close(path[[0, 5, 4, 9]], ends[[0, 1, 2, 3]])


def test_mode_collapse_is_warned(caplog: pytest.LogCaptureFixture) -> None:
    ev = GAN().evaluation()
    real = torch.rand(8, 1, 8, 8)
    same = real[:1].expand(8, -1, -1, -1)
    output = {"real": torch.zeros(8), "fake": torch.zeros(8), "images": same * 2 - 1}
    ev.update(output, real * 2 - 1, torch.tensor(2.0))
    with caplog.at_level(logging.WARNING, logger="ember.generative"):
        metrics = ev.compute()
    assert metrics["diversity"] == 0.0
    assert "collapsing onto few modes" in caplog.text
    assert float(diversity(real)) > 0


def test_captioner_scores_accuracy_and_bleu(digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    torch.manual_seed(0)
    model, task = models.create("captioner_tiny", image_size=8), tasks.create("captioning")
    _fit(task, model, digits, steps=150, lr=1e-2)
    model.eval()
    with torch.no_grad():
        output, target = task.forward(model, digits)
        ev = task.evaluation()
        ev.update(output, target, task.loss(output, target))
    metrics = ev.compute()
    assert set(metrics) == {"loss", "accuracy", "bleu"}
    assert metrics["accuracy"] > 0.5 and metrics["bleu"] > 10  # memorized: the batch it trained on
