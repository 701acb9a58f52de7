"""Token embeddings with a tied read-out, and sinusoidal / learned / rotary positions."""

import math

import pytest
import torch

from ember.nn import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    TokenEmbedding,
    make_positional,
)


def test_attend_is_the_transposed_embedding() -> None:
    emb = TokenEmbedding(11, 6)
    x = torch.randn(2, 3, 6)
    torch.testing.assert_close(emb.attend(x), x @ emb.weight.T)
    assert list(emb.state_dict()) == ["weight"]  # tying adds no second tensor


def test_sinusoidal_matches_the_paper_formula() -> None:
    pe = SinusoidalPositionalEncoding(8, max_len=20)
    out = pe(torch.zeros(1, 20, 8))[0]
    for pos in (0, 3, 19):
        for i in range(4):
            angle = pos / 10_000 ** (2 * i / 8)
            assert out[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert out[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    # an offset continues the positions (cached decoding)
    torch.testing.assert_close(pe(torch.zeros(1, 2, 8), offset=5)[0], out[5:7])
    assert list(pe.state_dict()) == []  # rebuilt, never saved


def test_learned_positions_and_the_length_limit() -> None:
    pe = LearnedPositionalEmbedding(6, 4)
    x = torch.zeros(2, 3, 4)
    torch.testing.assert_close(pe(x, offset=2)[1], pe.weight[2:5])
    with pytest.raises(ValueError, match="longer than the 6"):
        pe(torch.zeros(1, 7, 4))


def test_rope_scores_depend_only_on_distance() -> None:
    torch.manual_seed(0)
    rope = RotaryEmbedding(8, max_len=64)
    q, k = torch.randn(8), torch.randn(8)

    def score(i: int, j: int) -> float:
        qi = rope(q.view(1, 1, 1, 8), offset=i)
        kj = rope(k.view(1, 1, 1, 8), offset=j)
        return float((qi * kj).sum())

    assert score(3, 1) == pytest.approx(score(10, 8), abs=1e-5)
    assert score(0, 0) == pytest.approx(float(q @ k), abs=1e-5)  # position 0 is no rotation
    x = torch.randn(1, 2, 5, 8)
    torch.testing.assert_close(rope(x).norm(dim=-1), x.norm(dim=-1))  # a rotation keeps lengths


def test_rope_matches_complex_rotation() -> None:
    # reference: LLaMA's complex-number formulation on the "rotate half" channel pairing
    rope = RotaryEmbedding(6, max_len=10)
    x = torch.randn(1, 1, 10, 6)
    freqs = 10_000 ** (-torch.arange(0, 6, 2).float() / 6)
    angles = torch.outer(torch.arange(10).float(), freqs)
    z = torch.complex(x[..., :3], x[..., 3:]) * torch.polar(torch.ones_like(angles), angles)
    expected = torch.cat([z.real, z.imag], dim=-1)
    torch.testing.assert_close(rope(x), expected, atol=1e-5, rtol=1e-5)


def test_make_positional_by_name() -> None:
    assert isinstance(make_positional("learned", max_len=4, dim=2), LearnedPositionalEmbedding)
    assert make_positional("rope", max_len=4, dim=2) is None
    with pytest.raises(ValueError, match="unknown positional encoding 'alibi'"):
        make_positional("alibi", max_len=4, dim=2)
