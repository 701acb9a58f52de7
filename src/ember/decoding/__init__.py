"""ember.decoding: turning a model's outputs into samples — tokens for language and encoder-decoder
models, images for diffusion models.

- :mod:`~ember.decoding.sampling`: autoregressive sampling (temperature, top-k, top-p, repetition
  penalty, stop strings, KV cache) for models mapping ``(B, T)`` ids to ``(B, T, V)`` logits.
- :mod:`~ember.decoding.beam`: greedy and beam search for encoder-decoder models, and `translate`.
- :mod:`~ember.decoding.diffusion`: noise schedules (linear, cosine), the forward process, DDPM and
  DDIM steps, classifier-free guidance and the sampler loop.

Low in the layers (torch only), so that models (``GPT.generate``), tasks (BLEU on decoded
translations, a diffusion task's samples), serving and the ``ember generate`` command all decode
with the same functions.

Example:
    >>> import torch
    >>> from ember.decoding import diffusion, process_logits
    >>> process_logits(torch.tensor([[0.0, 2.0]]), temperature=2.0).tolist()
    [[0.0, 1.0]]
    >>> diffusion.timesteps(1000, 2)
    [500, 0]
"""

from ember.decoding import diffusion
from ember.decoding.beam import beam_search, greedy_search, translate
from ember.decoding.sampling import generate, generate_text, generate_tokens, process_logits, sample_next

__all__ = [
    "beam_search",
    "diffusion",
    "generate",
    "generate_text",
    "generate_tokens",
    "greedy_search",
    "process_logits",
    "sample_next",
    "translate",
]
