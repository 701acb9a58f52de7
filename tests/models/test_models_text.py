"""Sequence models: GPT, RNN LM and classifier, transformer encoder, encoder-decoder, ViT."""

import pytest
import torch

from ember import models


def test_gpt_ties_weights_into_one_tensor_and_counts_like_nanogpt() -> None:
    model = models.create("gpt", vocab_size=65, block_size=256)
    keys = list(model.state_dict())
    assert "tok_emb.weight" in keys and not any(k.startswith("head") for k in keys)
    # nanoGPT's count for this shape (its get_num_params adds the position table back): 3.2 M in the blocks
    blocks = sum(p.numel() for p in model.blocks.parameters())
    assert blocks == 4 * (12 * 256 * 256 + 13 * 256)
    untied = models.create("gpt_tiny", vocab_size=65, tie_weights=False)
    assert untied.head is not None and untied(torch.zeros(1, 4, dtype=torch.long)).shape == (1, 4, 65)


def test_gpt_refuses_a_context_longer_than_its_block() -> None:
    model = models.create("gpt_tiny", vocab_size=10, block_size=8)
    with pytest.raises(ValueError, match="block_size is 8"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_gpt_generate_greedy_is_deterministic_and_cache_matches_recompute() -> None:
    torch.manual_seed(0)
    model = models.create("gpt_tiny", vocab_size=12, block_size=16)
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    cached = model.generate(prompt, 10, greedy=True)
    full = model.generate(prompt, 10, greedy=True, use_cache=False)
    assert torch.equal(cached, full) and cached.shape == (2, 13)
    assert model.training  # generate restores the mode it found
    # past the context: both crop, so both still run (their contexts differ by design)
    assert model.generate(prompt, 30, greedy=True).shape == (2, 33)


def test_rnn_lm_cache_equals_full_run() -> None:
    torch.manual_seed(0)
    model = models.create("rnn_lm_tiny", vocab_size=20).eval()
    ids = torch.randint(0, 20, (2, 9))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache(2)
        steps = [model(ids[:, :4], cache=cache)] + [
            model(ids[:, t : t + 1], cache=cache) for t in range(4, 9)
        ]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-6, rtol=1e-5)
    assert cache.length == 9
    out = model.generate(ids[:, :2], 5, greedy=True)
    assert torch.equal(out, model.generate(ids[:, :2], 5, greedy=True, use_cache=False))


@pytest.mark.parametrize("name", ["rnn_classifier_tiny", "transformer_encoder_tiny"])
def test_text_classifiers_ignore_padding(name: str) -> None:
    torch.manual_seed(0)
    model = models.create(name, vocab_size=30, num_classes=3).eval()
    short = torch.tensor([[5, 6, 7], [8, 9, 10]])
    padded = torch.cat([short, torch.zeros(2, 4, dtype=torch.long)], dim=1)  # pad_id 0
    with torch.no_grad():
        torch.testing.assert_close(model(padded), model(short), atol=1e-5, rtol=1e-5)
        ragged = torch.tensor([[5, 6, 7, 0, 0], [8, 9, 10, 11, 12]])
        assert torch.allclose(model(ragged)[0], model(short[:1])[0], atol=1e-5)


@pytest.mark.parametrize("pool", ["last", "mean", "max"])
def test_rnn_classifier_pools(pool: str) -> None:
    model = models.create("rnn_classifier_tiny", vocab_size=30, num_classes=4, pool=pool)
    assert model(torch.tensor([[3, 4, 0], [5, 0, 0]])).shape == (2, 4)


def test_encoder_decoder_decode_step_with_cache_equals_forward() -> None:
    torch.manual_seed(0)
    model = models.create("encoder_decoder_tiny", vocab_size=25, decoder_layers=2).eval()
    src = torch.tensor([[5, 6, 7, 8, 0, 0], [9, 10, 11, 12, 13, 14]])  # padded source
    tgt = torch.randint(1, 25, (2, 7))
    with torch.no_grad():
        full = model(src, tgt)
        mask = model.source_mask(src)
        memory = model.encode(src, mask)
        cache = model.new_cache(2)
        steps = [model.decode_step(tgt[:, t : t + 1], memory, mask, cache=cache) for t in range(7)]
        torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)
        # beam search keeps hypotheses by reordering the cache
        cache.reorder(torch.tensor([1, 1]))
        nxt = model.decode_step(tgt[[1, 1], 7 - 1 :], memory[[1, 1]], mask[[1, 1]], cache=cache)
    assert nxt.shape == (2, 1, 25)
    # padding in the source does not change the first row's encoding
    with torch.no_grad():
        torch.testing.assert_close(model.encode(src[:1, :4]), memory[:1, :4], atol=1e-5, rtol=1e-5)


def test_encoder_decoder_with_separate_vocabularies() -> None:
    model = models.create("encoder_decoder_tiny", vocab_size=25, tgt_vocab_size=31)
    assert model(torch.randint(1, 25, (2, 5)), torch.randint(1, 31, (2, 3))).shape == (2, 3, 31)
    shared = models.create("encoder_decoder_tiny", vocab_size=25)
    assert shared.tgt_embed is shared.src_embed
    assert sum(k.endswith("embed.weight") for k in shared.state_dict()) == 1


@pytest.mark.parametrize("image_size", [8, 10, 28])
def test_vit_pads_odd_sizes_and_resizes_positions(image_size: int) -> None:
    model = models.create("vit_tiny", in_channels=1, image_size=8, patch_size=4, pool="mean")
    assert model(torch.randn(2, 1, image_size, image_size)).shape == (2, 10)
