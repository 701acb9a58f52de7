"""The contract of the generative zoo (autoencoders, GANs, diffusion U-Nets) and the captioner:
each tiny variant runs forward and backward, round-trips through safetensors into a fresh model,
and keeps its moving average where it has one."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_models_zoo import generative

from ember import models
from ember.data.phrases import PHRASE_SETS

GENERATIVE_TINY = [n for n in models.list_models() if n.endswith("_tiny") and generative(n)]


def _run(name: str, model: torch.nn.Module, size: int) -> torch.Tensor:
    """One forward pass of ``model`` on fixed inputs; a scalar to differentiate."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)  # a VAE samples its code in forward
    images = torch.rand(3, 1, size, size, generator=g)
    if name.startswith(("vae", "autoencoder")):
        return model(images).logits.sum()
    if name.startswith("dcgan"):
        return model.discriminator(model.generator(torch.randn(3, model.latent_dim, generator=g))).sum()
    if name.startswith("diffusion_unet"):
        cond = torch.tensor([0, 1, 10]) if model.condition == "class" else None
        return model(images, torch.tensor([0, 500, 999]), cond).square().sum()
    ids = torch.tensor([[1, 5, 6, 2], [1, 7, 2, 0], [1, 8, 9, 2]])
    return model(images, ids).sum()


def test_every_generative_family_is_covered() -> None:
    assert {"vae_tiny", "autoencoder_tiny", "dcgan_tiny", "diffusion_unet_tiny", "captioner_tiny"} <= set(
        GENERATIVE_TINY
    )


@pytest.mark.parametrize("size", [8, 28])
@pytest.mark.parametrize("name", GENERATIVE_TINY)
def test_tiny_generative_model_contract(name: str, size: int, tmp_path: Path) -> None:
    options = {"condition": "class"} if name.startswith("diffusion_unet") else {}
    torch.manual_seed(0)
    model = models.create(name, in_channels=1, image_size=size, **options)
    model.train()
    _run(name, model, size).backward()
    for pname, p in model.named_parameters():
        if p.requires_grad and not pname.startswith(("generator_ema", "ema.")):
            assert p.grad is not None and torch.isfinite(p.grad).all(), (
                f"{name}: no finite gradient for {pname}"
            )
    model.eval()
    with torch.no_grad():
        expected = _run(name, model, size)
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    torch.manual_seed(1)
    fresh = models.create(name, in_channels=1, image_size=size, **options)
    fresh.load_state_dict(load_file(tmp_path / "model.safetensors"))
    with torch.no_grad():
        assert torch.equal(_run(name, fresh.eval(), size), expected)


@pytest.mark.parametrize("name", ["dcgan_tiny", "diffusion_unet_tiny"])
def test_moving_average_follows_the_trained_weights(name: str) -> None:
    model = models.create(name, image_size=8)
    trained, average = (
        (model.generator, model.generator_ema) if name == "dcgan_tiny" else (model.net, model.ema)
    )
    assert all(p.requires_grad is False for p in average.parameters())
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(1.0)
    before = [p.clone() for p in average.parameters()]
    model.update_ema()  # the first update's decay is 1/10: mostly the new weights
    assert int(model.ema_updates) == 1
    for old, new, target in zip(before, average.parameters(), trained.parameters()):
        torch.testing.assert_close(new, 0.1 * old + 0.9 * target)


def test_text_conditioned_unet_reads_phrase_ids() -> None:
    model = models.create("diffusion_unet_tiny", image_size=8, condition="text", phrases="fashion")
    assert model.net.label.embed.num_embeddings == PHRASE_SETS["fashion"].vocab_size
    ids = PHRASE_SETS["fashion"].batch(["an ankle boot", "a bag"])
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([10, 10])
    with torch.no_grad():
        conditioned, unconditioned = model(x, t, ids), model(x, t)  # no condition: the empty phrase
    assert conditioned.shape == (2, 1, 8, 8) and unconditioned.shape == (2, 1, 8, 8)


def test_bad_shapes_and_options_are_explained() -> None:
    with pytest.raises(ValueError, match="image_size must divide by 4"):
        models.create("vae_tiny", image_size=30)
    with pytest.raises(ValueError, match="condition must be one of none, class, text"):
        models.create("diffusion_unet_tiny", condition="label")
    with pytest.raises(ValueError, match="unknown phrase set 'shoes'"):
        models.create("captioner_tiny", phrases="shoes")


def test_a_text_unet_fine_tuned_from_a_class_unet_reads_phrases_as_it_read_classes(tmp_path: Path) -> None:
    """The phrase encoder is aligned to the class table it replaces (`DiffusionUNet.adopt`): each
    class's training phrases and held-out paraphrases embed where the class did, the empty phrase
    where "no class" did, for the trained network and its moving average alike."""
    from ember.train.finetune import load_pretrained

    torch.manual_seed(0)
    source = models.create("diffusion_unet_tiny", image_size=8, condition="class")
    save_file(source.state_dict(), tmp_path / "class.safetensors")
    model = models.create("diffusion_unet_tiny", image_size=8, condition="text", phrases="digits")
    report = load_pretrained(model, tmp_path / "class.safetensors", ignore=["ema_updates"])
    assert sorted(report.adopted) == ["ema.label.weight", "net.label.weight"]
    assert not report.unexpected and "adoption" in report.summary()
    phrases, t = PHRASE_SETS["digits"], torch.tensor([3])
    with torch.no_grad():
        for unet, was in ((model.net, source.net), (model.ema, source.ema)):
            table = was.label.weight
            for k in range(10):
                texts = phrases.phrases(k, "heldout") + phrases.phrases(k)[:3]
                out = unet.label(phrases.batch(texts))
                assert torch.cdist(out, table).argmin(1).eq(k).all(), (k, texts)
                assert (out - table[k]).square().mean() < 0.02 * table.square().mean()
                assert torch.allclose(
                    unet.embed(t, phrases.batch(texts[:1])), was.embed(t, torch.tensor([k])), atol=0.2
                )
            empty = unet.embed(t, None) - was.embed(t, None)
            assert empty.square().mean() < 0.02 * table.square().mean()


def test_align_phrases_refuses_a_table_of_another_shape() -> None:
    from ember.models.diffusion_unet import PhraseEncoder, align_phrases

    encoder = PhraseEncoder(PHRASE_SETS["digits"].vocab_size, 16)
    with pytest.raises(ValueError, match="shape"):
        align_phrases(encoder, torch.zeros(5, 16), PHRASE_SETS["digits"], steps=1)
