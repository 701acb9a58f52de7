"""Decoding for encoder-decoder models: greedy search and beam search over padded source batches.

A model decodes here when it has ember's encoder-decoder interface (`ember.models.EncoderDecoder`):
``encode(src_ids, src_mask) -> memory``, ``new_cache(batch_size)`` (a cache with
``reorder(index)``) and ``decode_step(tgt_ids, memory, src_mask, cache=cache) -> (B, T, V) logits``.
Each step feeds one new token per row; the source is encoded once.

Both searches decode each row as if it were alone: padding never changes a result, and each row
stops at its own length limit ``ceil(max_len_a * source_tokens + max_len_b)`` (capped by the
model's ``block_size``). ``<pad>`` and ``<bos>`` are never produced. Results are (B, L) int64 ids,
without ``<bos>``, ending in ``<eos>`` when one was produced, right-padded with ``pad_id``.

Beam search keeps ``beam_size`` hypotheses per row. At each step the best ``2 * beam_size``
extensions are considered in score order: one ending in ``<eos>`` among the first ``beam_size``
is finished, the others refill the beam. A row is done when it has ``beam_size`` finished
hypotheses or reaches its limit (its open hypotheses are then finished as they are). The winner
has the best total log-probability divided by ``length ** length_penalty`` (``<eos>`` counted):
0 ranks by total log-probability, 1 by the per-token mean.

Example:
    >>> import torch
    >>> from ember.models import create
    >>> model = create("encoder_decoder_tiny", vocab_size=20).eval()
    >>> src = torch.tensor([[5, 6, 7, 3], [8, 3, 0, 0]])
    >>> out = beam_search(model, src, beam_size=3, bos_id=2, eos_id=3, max_len_b=5)
    >>> out.shape[0], bool((out[:, 0] != 2).all())
    (2, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["beam_search", "greedy_search", "translate"]


def _limits(src_mask: torch.Tensor, model: nn.Module, max_len_a: float, max_len_b: int) -> torch.Tensor:
    """(B,) most new tokens per row: a * source length + b, within the model's positions."""
    lengths = src_mask.sum(dim=1).float()
    limits = torch.ceil(max_len_a * lengths + max_len_b).long().clamp(min=1)
    block = getattr(model, "block_size", None)
    if block is not None:
        limits = limits.clamp(max=int(block) - 1)  # <bos> takes the first position
    return limits


def _banned(logits: torch.Tensor, ids: Sequence[int | None]) -> torch.Tensor:
    for i in ids:
        if i is not None:
            logits[:, i] = float("-inf")
    return logits


@torch.inference_mode()
def greedy_search(
    model: nn.Module,
    src_ids: torch.Tensor,
    src_mask: torch.Tensor | None = None,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int = 0,
    max_len_a: float = 1.5,
    max_len_b: int = 10,
) -> torch.Tensor:
    """The most likely next token at every step, for each row of (B, S) ``src_ids``; (B, L) ids.

    Args:
        model: an encoder-decoder (see the module docstring); put in eval mode by the caller.
        src_ids: (B, S) source ids, right-padded.
        src_mask: (B, S) True on real source tokens (default: ``src_ids != pad_id``).
        bos_id, eos_id, pad_id: the special ids.
        max_len_a, max_len_b: each row stops after ``ceil(a * source_tokens + b)`` new tokens.
    """
    if src_mask is None:
        src_mask = src_ids != pad_id
    batch = src_ids.shape[0]
    limits = _limits(src_mask, model, max_len_a, max_len_b)
    memory = model.encode(src_ids, src_mask)  # type: ignore[operator]
    cache = model.new_cache(batch)  # type: ignore[operator]
    token = torch.full((batch,), bos_id, dtype=torch.long, device=src_ids.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=src_ids.device)
    out = []
    for step in range(int(limits.max())):
        logits = model.decode_step(token[:, None], memory, src_mask, cache=cache)[:, -1].float()  # type: ignore[operator]
        token = _banned(logits, (pad_id, bos_id)).argmax(dim=-1).masked_fill(finished, pad_id)
        out.append(token)
        finished |= (token == eos_id) | (step + 1 >= limits)
        if bool(finished.all()):
            break
    return torch.stack(out, dim=1)


@torch.inference_mode()
def beam_search(
    model: nn.Module,
    src_ids: torch.Tensor,
    src_mask: torch.Tensor | None = None,
    *,
    beam_size: int = 4,
    length_penalty: float = 1.0,
    bos_id: int,
    eos_id: int,
    pad_id: int = 0,
    max_len_a: float = 1.5,
    max_len_b: int = 10,
) -> torch.Tensor:
    """The best of ``beam_size`` hypotheses kept per row of (B, S) ``src_ids``; (B, L) ids.

    Args:
        model: an encoder-decoder (see the module docstring); put in eval mode by the caller.
        src_ids: (B, S) source ids, right-padded.
        src_mask: (B, S) True on real source tokens (default: ``src_ids != pad_id``).
        beam_size: hypotheses kept per row (1 is greedy search).
        length_penalty: exponent of the length dividing a finished hypothesis's log-probability.
        bos_id, eos_id, pad_id: the special ids.
        max_len_a, max_len_b: each row stops after ``ceil(a * source_tokens + b)`` new tokens.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be at least 1; got {beam_size}")
    if src_mask is None:
        src_mask = src_ids != pad_id
    B, K, device = src_ids.shape[0], beam_size, src_ids.device
    limits = _limits(src_mask, model, max_len_a, max_len_b).tolist()
    memory = model.encode(src_ids, src_mask).repeat_interleave(K, dim=0)  # type: ignore[operator]
    mask = src_mask.repeat_interleave(K, dim=0)
    cache = model.new_cache(B * K)  # type: ignore[operator]
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start as the same <bos>: expand only the first
    token = torch.full((B * K,), bos_id, dtype=torch.long, device=device)
    history = torch.zeros(B * K, 0, dtype=torch.long, device=device)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]
    done = [False] * B
    for step in range(max(limits)):
        logits = model.decode_step(token[:, None], memory, mask, cache=cache)[:, -1].float()  # type: ignore[operator]
        logp = _banned(torch.log_softmax(logits, dim=-1), (pad_id, bos_id))
        vocab = logp.shape[-1]
        candidates = (scores.view(B * K, 1) + logp).view(B, K * vocab)
        top_values, top_index = candidates.topk(min(2 * K, K * vocab), dim=1)
        # the host walks each row's few candidates in score order (B x 2K, small)
        top_scores = top_values.tolist()
        top_beam, top_token = (top_index // vocab).tolist(), (top_index % vocab).tolist()
        new_scores = [[float("-inf")] * K for _ in range(B)]
        new_beam = [list(range(K)) for _ in range(B)]
        new_token = [[pad_id] * K for _ in range(B)]
        length = step + 1
        for b in range(B):
            if done[b]:
                continue
            slot = 0
            for rank, (score, beam, tok) in enumerate(zip(top_scores[b], top_beam[b], top_token[b])):
                if score == float("-inf") or slot == K:
                    break
                if tok == eos_id:
                    if rank < K:
                        words = history[b * K + beam].tolist() + [eos_id]
                        finished[b].append((score / length**length_penalty, words))
                    continue
                new_scores[b][slot], new_beam[b][slot], new_token[b][slot] = score, beam, tok
                slot += 1
            if length >= limits[b]:  # out of room: the open hypotheses finish as they are
                for slot in range(K):
                    if new_scores[b][slot] > float("-inf"):
                        words = history[b * K + new_beam[b][slot]].tolist() + [new_token[b][slot]]
                        finished[b].append((new_scores[b][slot] / length**length_penalty, words))
            if len(finished[b]) >= K or length >= limits[b]:
                done[b] = True
                new_scores[b] = [float("-inf")] * K
        if all(done):
            break
        rows = (torch.arange(B, device=device)[:, None] * K + torch.tensor(new_beam, device=device)).view(-1)
        cache.reorder(rows)
        token = torch.tensor(new_token, dtype=torch.long, device=device).view(-1)
        history = torch.cat([history[rows], token[:, None]], dim=1)
        scores = torch.tensor(new_scores, device=device)
    best = [max(hypotheses, key=lambda h: h[0])[1] if hypotheses else [] for hypotheses in finished]
    out = torch.full((B, max(1, max(len(h) for h in best))), pad_id, dtype=torch.long, device=device)
    for b, words in enumerate(best):
        out[b, : len(words)] = torch.tensor(words, dtype=torch.long, device=device)
    return out


def translate(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    beam_size: int = 4,
    length_penalty: float = 1.0,
    batch_size: int = 32,
    max_len_a: float = 1.5,
    max_len_b: int = 10,
) -> list[str]:
    """Decode ``texts`` with an encoder-decoder trained on ``tokenizer``'s ids (beam 1: greedy).

    Args:
        model: a trained `EncoderDecoder` (or any model with its decoding interface).
        tokenizer: the run's tokenizer (``encode``, ``decode``, ``bos_id``, ``eos_id``, ``pad_id``).
        texts: source sentences.
        beam_size, length_penalty, max_len_a, max_len_b: see `beam_search`.
        batch_size: sentences decoded together.

    Returns:
        One detokenized translation per text, in order.
    """
    from ember.data.tokenizers import pad_batch

    pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    block = int(getattr(model, "block_size", 1 << 30))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outputs: list[str] = []
    try:
        for start in range(0, len(texts), batch_size):
            rows = [tokenizer.encode(t)[: block - 1] for t in texts[start : start + batch_size]]
            src, mask = pad_batch(rows, pad_id=pad, eos_id=tokenizer.eos_id)
            src, mask = src.to(device), mask.to(device)
            options = dict(bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id, pad_id=pad)
            if beam_size == 1:
                ids = greedy_search(model, src, mask, max_len_a=max_len_a, max_len_b=max_len_b, **options)
            else:
                ids = beam_search(
                    model,
                    src,
                    mask,
                    beam_size=beam_size,
                    length_penalty=length_penalty,
                    max_len_a=max_len_a,
                    max_len_b=max_len_b,
                    **options,
                )
            outputs.extend(tokenizer.decode(row.tolist()) for row in ids)
    finally:
        model.train(was_training)
    return outputs
