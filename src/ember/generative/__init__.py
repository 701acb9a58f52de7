"""Generative models and sampling; so far, autoregressive decoding for language models.

Example:
    >>> from ember.generative import process_logits
    >>> import torch
    >>> process_logits(torch.tensor([[0.0, 2.0]]), temperature=2.0).tolist()
    [[0.0, 1.0]]
"""

from ember.generative.sampling import generate, generate_text, generate_tokens, process_logits, sample_next

__all__ = ["generate", "generate_text", "generate_tokens", "process_logits", "sample_next"]
