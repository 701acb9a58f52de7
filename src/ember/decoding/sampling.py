"""Autoregressive decoding: temperature, top-k, top-p, repetition penalty, stop strings, KV cache.

Works with any language model that maps ``(B, T)`` token ids to ``(B, T, V)`` logits. A model that
also has ``new_cache(batch_size)`` and takes ``cache=`` (ember's GPT and RNN LM) is fed one token
per step, its past kept in the cache; any other model is re-run on the whole (cropped) context
every step. A model's ``block_size`` attribute, when set, is its longest context.

Layers: these functions use torch only; ``GPT.generate`` and friends import them lazily.

Example:
    >>> import torch
    >>> from ember import models
    >>> from ember.decoding import generate
    >>> model = models.create("gpt_tiny", vocab_size=16)
    >>> out = generate(model, torch.tensor([[1, 2, 3]]), max_new_tokens=5, top_k=4,
    ...                generator=torch.Generator().manual_seed(0))
    >>> out.shape
    torch.Size([1, 8])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import torch
from torch import nn


class TextTokenizer(Protocol):
    """What `generate_text` needs from a tokenizer (ember's char and BPE tokenizers have it)."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


def process_logits(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    previous: torch.Tensor | None = None,
) -> torch.Tensor:
    """The next-token logits after repetition penalty, temperature, top-k and top-p (in that order).

    Args:
        logits: (B, V) scores of the next token.
        temperature: divide logits by it (> 0; lower is more conservative).
        top_k: keep only the k most likely tokens (0: all).
        top_p: keep the smallest set of most likely tokens whose probability reaches p (1: all).
        repetition_penalty: CTRL's penalty (> 1 discourages repeats): a seen token's positive logit
            is divided by it, a negative one multiplied.
        previous: (B, T) ids already in each sequence, for the repetition penalty.

    Returns:
        (B, V) float32 logits, removed tokens at -inf.

    Example:
        >>> process_logits(torch.tensor([[1.0, 3.0, 2.0]]), top_k=2)
        tensor([[-inf, 3., 2.]])
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (use greedy=True for argmax); got {temperature}")
    logits = logits.float()
    if repetition_penalty != 1.0 and previous is not None and previous.numel():
        seen = logits.gather(1, previous)
        seen = torch.where(seen > 0, seen / repetition_penalty, seen * repetition_penalty)
        logits = logits.scatter(1, previous, seen)
    logits = logits / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the more likely ones alone already reach top_p (the first always stays)
        drop = probs.cumsum(dim=-1) - probs >= top_p
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return logits


def sample_next(
    logits: torch.Tensor,
    *,
    greedy: bool = False,
    generator: torch.Generator | None = None,
    **processing: Any,
) -> torch.Tensor:
    """(B,) next token ids from (B, V) logits: argmax when ``greedy``, else a draw after `process_logits`.

    Example:
        >>> sample_next(torch.tensor([[0.0, 5.0, 1.0]]), greedy=True).tolist()
        [1]
    """
    if greedy:
        return logits.argmax(dim=-1)
    probs = process_logits(logits, **processing).softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def generate_tokens(
    model: nn.Module,
    ids: torch.Tensor,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    greedy: bool = False,
    use_cache: bool = True,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    """Yield each new (B,) column of token ids as it is decoded (for streaming).

    Args:
        model: a language model, (B, T) ids -> (B, T, V) logits (see the module docstring).
        ids: (B, T) prompt ids (T >= 1).
        max_new_tokens: tokens to add at most.
        temperature, top_k, top_p, repetition_penalty: see `process_logits`.
        greedy: always take the most likely token (so does ``temperature=0``).
        use_cache: feed one token per step through the model's KV cache when it has one;
            False re-runs the whole context every step (the reference the cache must match).
        eos_id: a sequence that produced it is finished (it then repeats eos); all finished stops.
        generator: the random source of the draws, for reproducible samples.
    """
    if ids.ndim != 2 or ids.shape[1] == 0:
        raise ValueError(f"ids must be (batch, length >= 1) token ids; got shape {tuple(ids.shape)}")
    greedy = greedy or temperature == 0
    block = getattr(model, "block_size", None)
    cached = use_cache and hasattr(model, "new_cache")
    options = dict(temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            cache = model.new_cache(ids.shape[0]) if cached else None  # type: ignore[operator]
            context = ids if block is None else ids[:, -block:]
            logits = model(context, cache=cache) if cached else model(context)
            finished = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
            for _ in range(max_new_tokens):
                penalty_ids = ids if repetition_penalty != 1.0 else None
                token = sample_next(
                    logits[:, -1], greedy=greedy, generator=generator, previous=penalty_ids, **options
                )
                if eos_id is not None:
                    token = token.masked_fill(finished, eos_id)
                    finished |= token == eos_id
                ids = torch.cat([ids, token[:, None]], dim=1)
                yield token
                if eos_id is not None and bool(finished.all()):
                    return
                if not cached:
                    logits = model(ids if block is None else ids[:, -block:])
                elif block is not None and cache.length >= block:  # type: ignore[union-attr]
                    # the context is full: restart the cache from the last 3/4 of a block
                    cache = model.new_cache(ids.shape[0])  # type: ignore[operator]
                    logits = model(ids[:, -max(1, 3 * block // 4) :], cache=cache)
                else:
                    logits = model(token[:, None], cache=cache)
    finally:
        model.train(was_training)


def generate(model: nn.Module, ids: torch.Tensor, *, max_new_tokens: int, **options: Any) -> torch.Tensor:
    """The prompt ``ids`` (B, T) followed by up to ``max_new_tokens`` decoded tokens: (B, T + n).

    Takes the options of `generate_tokens`.
    """
    new = list(generate_tokens(model, ids, max_new_tokens=max_new_tokens, **options))
    return torch.cat([ids, torch.stack(new, dim=1)], dim=1) if new else ids


def generate_text(
    model: nn.Module,
    tokenizer: TextTokenizer,
    prompt: str,
    *,
    max_new_tokens: int = 200,
    stop: Sequence[str] = (),
    on_text: Callable[[str], None] | None = None,
    device: torch.device | str | None = None,
    **options: Any,
) -> str:
    """Continue ``prompt`` and return the new text, streaming pieces to ``on_text`` as they decode.

    Text is held back while it could still be the start of a stop string, or ends in half of a
    multi-byte character (byte-level BPE), so what is streamed is always final.

    Args:
        model: a language model (see `generate_tokens`).
        tokenizer: has ``encode(str) -> ids`` and ``decode(ids) -> str``.
        prompt: the text to continue (at least one token once encoded).
        max_new_tokens: tokens to add at most.
        stop: strings that end generation; the returned text stops before the first one.
        on_text: called with each new piece of text (e.g. print with flush for a terminal).
        device: where the prompt ids go (default: the model's parameters' device).
        **options: `generate_tokens` options (temperature, top_k, top_p, ..., eos_id, generator).

    Returns:
        The generated text, without the prompt.
    """
    text = ""
    for piece in stream_text(model, tokenizer, prompt, max_new_tokens=max_new_tokens, stop=stop, device=device,
                             **options):  # fmt: skip
        text += piece
        if on_text is not None:
            on_text(piece)
    return text


def stream_text(
    model: nn.Module,
    tokenizer: TextTokenizer,
    prompt: str,
    *,
    max_new_tokens: int = 200,
    stop: Sequence[str] = (),
    device: torch.device | str | None = None,
    **options: Any,
) -> Iterator[str]:
    """Continue ``prompt``, yielding each new piece of text as soon as it is final.

    What `generate_text` streams, as an iterator (the server's ``/v1/generate`` sends each piece
    as it comes). The pieces joined are the generated text, without the prompt, stopped before the
    first stop string. Takes `generate_text`'s arguments.

    Example:
        >>> import torch
        >>> from ember import models
        >>> from ember.data.tokenizers import CharTokenizer
        >>> tok = CharTokenizer.train(["abcd"])
        >>> model = models.create("gpt_tiny", vocab_size=tok.vocab_size)
        >>> pieces = list(stream_text(model, tok, "ab", max_new_tokens=5, greedy=True))
        >>> len("".join(pieces)) <= 5
        True
    """
    prompt_ids = tokenizer.encode(prompt)
    if not prompt_ids:
        raise ValueError("the prompt encodes to no tokens; give at least one character")
    if device is None:
        device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    new: list[int] = []
    emitted = 0
    text = ""
    eos_id = options.get("eos_id")
    for token in generate_tokens(model, ids, max_new_tokens=max_new_tokens, **options):
        if eos_id is not None and int(token[0]) == eos_id:
            break
        new.append(int(token[0]))
        text = tokenizer.decode(new)
        cut = _first_stop(text, stop)
        if cut is not None:
            text = text[:cut]
            break
        ready = _safe_prefix(text, stop)
        if ready > emitted:
            yield text[emitted:ready]
            emitted = ready
    if len(text) > emitted:
        yield text[emitted:]


def _first_stop(text: str, stop: Sequence[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return min(hits) if hits else None


def _safe_prefix(text: str, stop: Sequence[str]) -> int:
    """Length of ``text`` that can be shown now: no possible stop-string start, no half character."""
    end = len(text)
    while end and text[end - 1] == "\ufffd":  # an incomplete UTF-8 sequence so far
        end -= 1
    shown = text[:end]
    hold = max(
        (k for s in stop for k in range(1, min(len(s) - 1, end) + 1) if shown.endswith(s[:k])), default=0
    )
    return end - hold


__all__ = ["generate", "generate_text", "generate_tokens", "process_logits", "sample_next", "stream_text"]
