"""Greedy and beam search: a hand-built scorer where greedy loses, padding-independence, the KV cache."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ember.data.tokenizers import CharTokenizer
from ember.decoding.beam import beam_search, greedy_search, translate
from ember.models import create

PAD, BOS, EOS, A, B, C = range(6)


class ToyCache:
    """The toy's state is its last token, fed back each step: nothing to keep but the length."""

    def __init__(self) -> None:
        self.length = 0
        self.reorders: list[list[int]] = []

    def reorder(self, index: torch.Tensor) -> None:
        self.reorders.append(index.tolist())


class MarkovScorer(nn.Module):
    """Next-token probabilities that depend only on the previous token: a hand-written table.

    Args:
        transitions: ``{previous: {next: probability}}``; every other next token gets ~0.
    """

    block_size = 64

    def __init__(self, transitions: dict[int, dict[int, float]]) -> None:
        super().__init__()
        table = torch.full((6, 6), 1e-9)
        for previous, row in transitions.items():
            for nxt, p in row.items():
                table[previous, nxt] = p
        self.register_buffer("logits", table.log())
        self.dummy = nn.Parameter(torch.zeros(1))

    def encode(self, src_ids: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        return torch.zeros(src_ids.shape[0], 1, 1)

    def new_cache(self, batch_size: int) -> ToyCache:
        return ToyCache()

    def decode_step(self, tgt_ids: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor, *, cache: ToyCache) -> torch.Tensor:  # fmt: skip
        cache.length += tgt_ids.shape[1]
        return self.logits[tgt_ids]  # (N, T) -> (N, T, V)


SRC = torch.tensor([[A, B, C, EOS]])


def test_beam_finds_what_greedy_misses() -> None:
    """From <bos>, A (0.6) beats B (0.4), so greedy takes A; but A ends late and unlikely
    (A C <eos>: 0.252) while B ends at once (B <eos>: 0.36)."""
    model = MarkovScorer(
        {BOS: {A: 0.6, B: 0.4}, A: {EOS: 0.3, C: 0.7}, C: {EOS: 0.6, C: 0.4}, B: {EOS: 0.9, C: 0.1}}
    )
    greedy = greedy_search(model, SRC, bos_id=BOS, eos_id=EOS, max_len_b=4)
    assert greedy.tolist() == [[A, C, EOS]]
    beam = beam_search(model, SRC, beam_size=2, length_penalty=0.0, bos_id=BOS, eos_id=EOS, max_len_b=4)
    assert beam.tolist() == [[B, EOS]]
    assert (
        beam_search(model, SRC, beam_size=1, bos_id=BOS, eos_id=EOS, max_len_b=4).tolist() == greedy.tolist()
    )


def test_length_penalty_changes_the_winner() -> None:
    """A <eos> is the most probable (0.4 > A C <eos> 0.36), A C <eos> the best per token."""
    model = MarkovScorer({BOS: {A: 1.0}, A: {EOS: 0.4, C: 0.6}, C: {EOS: 0.6, C: 0.4}})
    total = beam_search(model, SRC, beam_size=3, length_penalty=0.0, bos_id=BOS, eos_id=EOS, max_len_b=6)
    mean = beam_search(model, SRC, beam_size=3, length_penalty=1.0, bos_id=BOS, eos_id=EOS, max_len_b=6)
    assert total.tolist() == [[A, EOS]]
    assert mean.tolist() == [[A, C, EOS]]  # log(0.36) / 3 > log(0.4) / 2


def test_rows_stop_at_their_own_limit() -> None:
    model = MarkovScorer({BOS: {A: 1.0}, A: {C: 1.0}, C: {C: 1.0}})  # never ends by itself
    src = torch.tensor([[A, EOS, PAD, PAD], [A, B, C, EOS]])
    options = dict(bos_id=BOS, eos_id=EOS, max_len_a=1.0, max_len_b=1)
    for out in (greedy_search(model, src, **options), beam_search(model, src, beam_size=2, **options)):
        assert (out != PAD).sum(dim=1).tolist() == [3, 5]  # ceil(1 * 2 + 1), ceil(1 * 4 + 1)
        assert EOS not in out.tolist()[0]


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return create("encoder_decoder_tiny", vocab_size=24, max_len=32).eval()


def sources() -> list[list[int]]:
    return [[5, 9, 11, 7, 3], [6, 3], [12, 13, 14, 3], [20, 3]]


def padded() -> torch.Tensor:
    rows = sources()
    out = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r)
    return out


def strip(row: list[int]) -> list[int]:
    return row[: row.index(EOS) + 1] if EOS in row else [t for t in row if t != PAD]


@pytest.mark.parametrize("beam_size", [1, 3])
def test_batched_decoding_equals_one_at_a_time(model: nn.Module, beam_size: int) -> None:
    options = dict(beam_size=beam_size, bos_id=BOS, eos_id=EOS, max_len_a=1.0, max_len_b=3)
    together = beam_search(model, padded(), **options)
    for i, row in enumerate(sources()):
        alone = beam_search(model, torch.tensor([row]), **options)
        assert strip(together[i].tolist()) == strip(alone[0].tolist())


def test_greedy_with_cache_equals_recomputing_everything(model: nn.Module) -> None:
    src = padded()
    out = greedy_search(model, src, bos_id=BOS, eos_id=EOS, max_len_a=1.0, max_len_b=3)
    for i, row in enumerate(sources()):
        prefix = [BOS]
        with torch.no_grad():  # the reference: the whole model on the whole prefix, every step
            for _ in range(out.shape[1]):
                logits = model(torch.tensor([row]), torch.tensor([prefix]))[0, -1]
                logits[[PAD, BOS]] = float("-inf")
                prefix.append(int(logits.argmax()))
                if prefix[-1] == EOS or len(prefix) - 1 >= len(row) + 3:
                    break
        assert strip(out[i].tolist()) == prefix[1:]


def test_translate_returns_text_per_input() -> None:
    tok = CharTokenizer.train(["hola mundo"])
    torch.manual_seed(0)
    net = create("encoder_decoder_tiny", vocab_size=tok.vocab_size, max_len=16)
    out = translate(net, tok, ["hola", "mundo", "ho"], beam_size=2, batch_size=2, max_len_b=2)
    assert len(out) == 3 and all(isinstance(t, str) for t in out)
    assert net.training  # the mode it came in with is restored
