"""The generative stage: autoregressive text decoding (`sampling`, `beam`), and for image models
`score` (``ember score``: Fréchet distance, precision/recall and class accuracy in an independent
classifier's features, beside baselines), `baselines`, `images` (grids, PNG) and `runs` (a run's
task and model, by what the task can do). The diffusion samplers live lower, in `ember.decoding`.

Example:
    >>> from ember.generative import process_logits
    >>> import torch
    >>> process_logits(torch.tensor([[0.0, 2.0]]), temperature=2.0).tolist()
    [[0.0, 1.0]]
"""

from ember.generative.sampling import generate, generate_text, generate_tokens, process_logits, sample_next

__all__ = ["generate", "generate_text", "generate_tokens", "process_logits", "sample_next"]
