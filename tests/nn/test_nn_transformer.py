"""Attention (causal, cached, cross), the transformer block, and activation checkpointing.

References: ``nn.MultiheadAttention`` for the attention maths; a full recompute for the KV cache;
the un-checkpointed model for activation checkpointing (loss, gradients), with peak memory read
from ``torch.profiler``'s allocation events.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ember import models
from ember.nn import CrossAttention, KVCache, SelfAttention, TransformerBlock, checkpointing, make_mlp


def _self_pair(
    dim: int = 16, heads: int = 4, causal: bool = False
) -> tuple[SelfAttention, nn.MultiheadAttention]:
    torch.manual_seed(0)
    ours = SelfAttention(dim, heads, causal=causal).eval()
    ref = nn.MultiheadAttention(dim, heads, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_bias.normal_()
        ours.qkv.weight.copy_(ref.in_proj_weight)
        ours.qkv.bias.copy_(ref.in_proj_bias)
        ours.proj.weight.copy_(ref.out_proj.weight)
        ours.proj.bias.copy_(ref.out_proj.bias)
    return ours, ref


def test_self_attention_matches_torch_with_causal_and_padding_masks() -> None:
    ours, ref = _self_pair()
    x = torch.randn(2, 6, 16)
    expected, _ = ref(x, x, x, need_weights=False)
    torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-5)
    pad = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])  # ours: True = real token
    expected, _ = ref(x, x, x, key_padding_mask=~pad, need_weights=False)
    torch.testing.assert_close(ours(x, mask=pad), expected, atol=1e-5, rtol=1e-5)
    ours.causal = True
    future = torch.triu(torch.ones(6, 6, dtype=torch.bool), diagonal=1)
    expected, _ = ref(x, x, x, attn_mask=future, need_weights=False)
    torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-5)


def test_cross_attention_matches_torch() -> None:
    torch.manual_seed(0)
    ours, ref = CrossAttention(16, 2).eval(), nn.MultiheadAttention(16, 2, batch_first=True).eval()
    with torch.no_grad():
        ours.q.weight.copy_(ref.in_proj_weight[:16])
        ours.q.bias.copy_(ref.in_proj_bias[:16])
        ours.kv.weight.copy_(ref.in_proj_weight[16:])
        ours.kv.bias.copy_(ref.in_proj_bias[16:])
        ours.proj.weight.copy_(ref.out_proj.weight)
        ours.proj.bias.copy_(ref.out_proj.bias)
    x, memory = torch.randn(2, 3, 16), torch.randn(2, 5, 16)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    expected, _ = ref(x, memory, memory, key_padding_mask=~mask, need_weights=False)
    torch.testing.assert_close(ours(x, memory, memory_mask=mask), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rope", [False, True])
def test_causal_masking_future_tokens_leave_earlier_outputs_unchanged(rope: bool) -> None:
    torch.manual_seed(0)
    model = models.create("gpt_tiny", vocab_size=20, pos_embed="rope" if rope else "learned").eval()
    ids = torch.randint(0, 20, (2, 12))
    changed = ids.clone()
    changed[:, 7:] = torch.randint(0, 20, (2, 5))
    with torch.no_grad():
        a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :7], b[:, :7], atol=1e-6, rtol=0)  # positions 0..6 see no change
    assert not torch.allclose(a[:, 7:], b[:, 7:])  # (the change does reach the later ones)


@pytest.mark.parametrize("pos_embed", ["learned", "sinusoidal", "rope"])
@pytest.mark.parametrize("mlp,norm", [("gelu", "layer"), ("swiglu", "rms")])
def test_kv_cache_logits_equal_full_recompute(pos_embed: str, mlp: str, norm: str) -> None:
    torch.manual_seed(0)
    model = models.create("gpt_tiny", vocab_size=30, pos_embed=pos_embed, mlp=mlp, norm=norm).eval()
    ids = torch.randint(0, 30, (2, 14))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache(2)
        # a 5-token prefill, then single tokens, then a 3-token chunk: every path of the mask code
        pieces = [model(ids[:, :5], cache=cache)]
        pieces += [model(ids[:, t : t + 1], cache=cache) for t in range(5, 11)]
        pieces.append(model(ids[:, 11:], cache=cache))
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-4)
    assert cache.length == 14


def test_kv_cache_with_padding_mask_and_reorder() -> None:
    torch.manual_seed(0)
    attn = SelfAttention(8, 2, causal=True).eval()
    x = torch.randn(3, 6, 8)
    pad = torch.ones(3, 6, dtype=torch.bool)
    pad[1, 0] = False  # a left-padded prompt
    full = attn(x, mask=pad)
    cache = KVCache(1, max_len=6)
    steps = [attn(x[:, :3], mask=pad[:, :3], cache=cache.layers[0])]
    steps += [attn(x[:, t : t + 1], mask=pad[:, : t + 1], cache=cache.layers[0]) for t in range(3, 6)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-6, rtol=1e-5)
    cache.reorder(torch.tensor([2, 0]))
    assert cache.layers[0].k is not None and cache.layers[0].k.shape[0] == 2
    with pytest.raises(ValueError, match="KV cache holds 6 positions"):
        attn(x[:2, :1], cache=cache.layers[0])


def test_block_with_cross_attention_caches_the_memory() -> None:
    torch.manual_seed(0)
    block = TransformerBlock(16, 2, causal=True, cross_attention=True).eval()
    x, memory = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    full = block(x, memory=memory)
    cache = KVCache(1, max_len=5).layers[0]
    steps = [block(x[:, t : t + 1], memory=memory, cache=cache) for t in range(5)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.cross is not None and cache.cross[0].shape == (2, 2, 7, 8)
    with pytest.raises(ValueError, match="memory="):
        block(x)


def test_swiglu_has_as_many_weights_as_the_gelu_mlp() -> None:
    gelu, swiglu = make_mlp("gelu", 48, bias=False), make_mlp("swiglu", 48, bias=False)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert abs(count(swiglu) - count(gelu)) / count(gelu) < 0.02
    with pytest.raises(ValueError, match="unknown mlp"):
        make_mlp("relu2", 8)


# --------------------------------------------------------------------------- activation checkpointing


def _peak_bytes(fn) -> int:  # type: ignore[no-untyped-def]
    """Peak of live CPU tensor bytes during ``fn()`` from the profiler's allocation/free events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]  # type: ignore[union-attr]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def test_checkpointing_same_loss_and_gradients_less_memory() -> None:
    torch.manual_seed(0)
    plain = models.create("gpt_tiny", vocab_size=40, num_layers=4, embed_dim=64, block_size=64, dropout=0.1)
    ckpt = checkpointing.apply(copy.deepcopy(plain))
    assert len(checkpointing.checkpointed_blocks(ckpt)) == 4
    assert list(ckpt.state_dict()) == list(plain.state_dict())  # weights load either way
    ids, target = torch.randint(0, 40, (8, 64)), torch.randint(0, 40, (8, 64))

    def step(model: nn.Module) -> torch.Tensor:
        torch.manual_seed(1)  # the same dropout masks
        loss = F.cross_entropy(model(ids).flatten(0, 1), target.flatten())
        loss.backward()
        return loss.detach()

    torch.testing.assert_close(step(ckpt), step(plain), atol=0, rtol=0)
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        assert q.grad is not None and p.grad is not None
        torch.testing.assert_close(q.grad, p.grad, atol=1e-6, rtol=1e-5, msg=name)
    peak_plain, peak_ckpt = _peak_bytes(lambda: step(plain)), _peak_bytes(lambda: step(ckpt))
    assert peak_ckpt < 0.75 * peak_plain, (peak_plain, peak_ckpt)
    # eval and no-grad forwards skip the checkpoint machinery; remove() restores the plain forward
    with torch.no_grad():
        torch.testing.assert_close(ckpt.eval()(ids), plain.eval()(ids))
    assert checkpointing.checkpointed_blocks(checkpointing.remove(ckpt)) == []


def test_checkpointing_finds_blocks_of_other_models_and_survives_deepcopy() -> None:
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, batch_first=True)
    encoder = nn.TransformerEncoder(layer, num_layers=3, enable_nested_tensor=False)
    assert len(checkpointing.checkpointed_blocks(checkpointing.apply(encoder))) == 3
    vit = checkpointing.apply(models.create("vit_tiny", depth=2))
    twin = copy.deepcopy(vit)
    assert len(checkpointing.checkpointed_blocks(twin)) == 2
    # the copy's blocks run the copy's weights, not the original's
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(1.0)
    x = torch.randn(2, 3, 8, 8)
    assert not torch.allclose(twin(x), vit(x))
    with pytest.raises(ValueError, match="no transformer blocks"):
        checkpointing.apply(nn.Sequential(nn.Linear(2, 2)))


def test_trainer_option_checkpoints_blocks(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ember import Trainer

    ids = torch.randint(0, 16, (32, 8))
    data = (ids[:, :-1].contiguous(), ids[:, 1:].contiguous())
    results = []
    for on in (False, True):
        torch.manual_seed(0)
        model = models.create("gpt_tiny", vocab_size=16, block_size=8)
        trainer = Trainer(
            model,
            task="language_model",
            epochs=1,
            batch_size=8,
            activation_checkpointing=on,
            runs_dir=tmp_path,
        )
        results.append(trainer.fit(data, data).metrics["val/loss"])
        assert bool(checkpointing.checkpointed_blocks(model)) == on
    assert results[0] == pytest.approx(results[1], rel=1e-5)
