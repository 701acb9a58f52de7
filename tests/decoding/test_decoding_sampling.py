"""Decoding: logit processors against hand computations, stop strings, streaming, eos, KV cache."""

from __future__ import annotations

import pytest
import torch

from ember import models
from ember.data.tokenizers import CharTokenizer
from ember.decoding import generate, generate_text, generate_tokens, process_logits, sample_next

LOGITS = torch.tensor([[2.0, 1.0, 0.5, -1.0, -3.0]])


def test_temperature_and_top_k() -> None:
    torch.testing.assert_close(process_logits(LOGITS, temperature=0.5), LOGITS * 2)
    out = process_logits(LOGITS, top_k=2)
    assert torch.isfinite(out).tolist() == [[True, True, False, False, False]]
    with pytest.raises(ValueError, match="temperature must be > 0"):
        process_logits(LOGITS, temperature=0.0)


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    probs = LOGITS.softmax(-1)[0]  # 0.61, 0.22, 0.14, 0.03, 0.004
    for p, kept in [(0.5, 1), (0.7, 2), (0.9, 3), (0.99, 4), (1.0, 5)]:
        out = process_logits(LOGITS, top_p=p)
        assert int(torch.isfinite(out).sum()) == kept, p
        assert probs[:kept].sum() >= min(p, 1.0) - 1e-6  # the kept mass reaches p ...
        assert kept == 1 or probs[: kept - 1].sum() < p  # ... and one token fewer would not
    # unsorted logits: the kept tokens are the likeliest, wherever they sit
    shuffled = LOGITS[:, [3, 0, 4, 1, 2]]
    assert torch.isfinite(process_logits(shuffled, top_p=0.7)).tolist() == [[False, True, False, True, False]]


def test_repetition_penalty_is_ctrls() -> None:
    previous = torch.tensor([[0, 3, 3]])
    out = process_logits(LOGITS, repetition_penalty=2.0, previous=previous)
    torch.testing.assert_close(out, torch.tensor([[1.0, 1.0, 0.5, -2.0, -3.0]]))


def test_sampling_is_seeded_and_greedy_is_argmax() -> None:
    draws = [
        sample_next(LOGITS.repeat(50, 1), generator=torch.Generator().manual_seed(3)).tolist()
        for _ in range(2)
    ]
    assert draws[0] == draws[1] and len(set(draws[0])) > 1
    assert sample_next(LOGITS, greedy=True).tolist() == [0]
    assert sample_next(LOGITS, top_k=1, generator=torch.Generator().manual_seed(0)).tolist() == [0]


def test_generation_streams_stops_and_caches() -> None:
    torch.manual_seed(0)
    tok = CharTokenizer.train(["abcdefgh \n"])
    model = models.create("gpt_tiny", vocab_size=tok.vocab_size, block_size=24)
    prompt = torch.tensor([tok.encode("abc")])
    options = dict(temperature=0.9, top_p=0.9, repetition_penalty=1.1)
    with_cache = generate(
        model, prompt, max_new_tokens=20, generator=torch.Generator().manual_seed(5), **options
    )
    no_cache = generate(
        model,
        prompt,
        max_new_tokens=20,
        generator=torch.Generator().manual_seed(5),
        use_cache=False,
        **options,
    )
    assert torch.equal(with_cache, no_cache)  # the cache changes the cost, never the tokens
    pieces: list[str] = []
    text = generate_text(
        model,
        tok,
        "abc",
        max_new_tokens=30,
        on_text=pieces.append,
        generator=torch.Generator().manual_seed(1),
    )
    assert "".join(pieces) == text and 0 < len(text) <= 30  # specials decode to nothing
    stop = text[5:7]
    pieces.clear()
    stopped = generate_text(
        model,
        tok,
        "abc",
        max_new_tokens=30,
        stop=[stop],
        on_text=pieces.append,
        generator=torch.Generator().manual_seed(1),
    )
    assert stopped == text[: text.index(stop)] and "".join(pieces) == stopped  # nothing of the stop shown


def test_eos_finishes_a_sequence() -> None:
    torch.manual_seed(0)
    model = models.create("gpt_tiny", vocab_size=8, block_size=16)
    with torch.no_grad():  # make token 3 (eos) overwhelmingly likely
        model.tok_emb.weight[3] += 5 * model.tok_emb.weight.norm(dim=1).max()
    tokens = list(generate_tokens(model, torch.tensor([[3]]), max_new_tokens=10, greedy=True, eos_id=3))
    assert len(tokens) == 1 and tokens[0].tolist() == [3]
