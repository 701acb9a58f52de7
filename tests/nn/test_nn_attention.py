import pytest
import torch
from torch import nn

from ember.nn import MultiHeadSelfAttention


def _pair(embed_dim: int = 32, num_heads: int = 4, bias: bool = True):  # type: ignore[no-untyped-def]
    ours = MultiHeadSelfAttention(embed_dim, num_heads, bias=bias).eval()
    ref = nn.MultiheadAttention(embed_dim, num_heads, bias=bias, batch_first=True).eval()
    with torch.no_grad():
        ours.qkv.weight.copy_(ref.in_proj_weight)
        ours.proj.weight.copy_(ref.out_proj.weight)
        if bias:
            ref.in_proj_bias.normal_()
            ref.out_proj.bias.normal_()
            ours.qkv.bias.copy_(ref.in_proj_bias)
            ours.proj.bias.copy_(ref.out_proj.bias)
    return ours, ref


@pytest.mark.parametrize("bias", [True, False])
def test_matches_torch_multihead_attention(bias: bool) -> None:
    ours, ref = _pair(bias=bias)
    x = torch.randn(3, 7, 32)
    expected, _ = ref(x, x, x, need_weights=False)
    torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-5)


def test_causal_and_mask_conventions_match_torch() -> None:
    ours, ref = _pair()
    x = torch.randn(2, 6, 32)
    future = torch.triu(torch.ones(6, 6, dtype=torch.bool), diagonal=1)  # torch: True = blocked
    expected, _ = ref(x, x, x, attn_mask=future, need_weights=False)
    torch.testing.assert_close(ours(x, is_causal=True), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        ours(x, attn_mask=~future), expected, atol=1e-5, rtol=1e-5
    )  # ours: True = allowed


def test_causal_output_ignores_the_future() -> None:
    attn = MultiHeadSelfAttention(16, 2).eval()
    x = torch.randn(1, 5, 16)
    changed = x.clone()
    changed[:, -1] += 1.0
    torch.testing.assert_close(attn(x, is_causal=True)[:, :-1], attn(changed, is_causal=True)[:, :-1])


def test_attention_dropout_only_in_training() -> None:
    attn = MultiHeadSelfAttention(16, 2, dropout=0.5)
    x = torch.randn(2, 5, 16)
    attn.eval()
    torch.testing.assert_close(attn(x), attn(x))
    attn.train()
    assert not torch.allclose(attn(x), attn(x))


def test_heads_must_divide_embed_dim() -> None:
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadSelfAttention(30, 4)
