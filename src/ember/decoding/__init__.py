"""ember.decoding: turning a model's scores into tokens, for language and encoder-decoder models.

- :mod:`~ember.decoding.sampling`: autoregressive sampling (temperature, top-k, top-p, repetition
  penalty, stop strings, KV cache) for models mapping ``(B, T)`` ids to ``(B, T, V)`` logits.
- :mod:`~ember.decoding.beam`: greedy and beam search for encoder-decoder models, and `translate`.

Low in the layers (torch only), so that models (``GPT.generate``), tasks (BLEU on decoded
translations), serving and the ``ember generate`` command all decode with the same functions.

Example:
    >>> import torch
    >>> from ember.decoding import process_logits
    >>> process_logits(torch.tensor([[0.0, 2.0]]), temperature=2.0).tolist()
    [[0.0, 1.0]]
"""

from ember.decoding.beam import beam_search, greedy_search, translate
from ember.decoding.sampling import generate, generate_text, generate_tokens, process_logits, sample_next

__all__ = [
    "beam_search",
    "generate",
    "generate_text",
    "generate_tokens",
    "greedy_search",
    "process_logits",
    "sample_next",
    "translate",
]
