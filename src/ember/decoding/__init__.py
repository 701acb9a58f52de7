"""Decoding: turning a trained model's outputs into samples (the diffusion samplers, for now).

Low in the layer order (beside data and track): tasks and stages both use it.

Example:
    >>> from ember.decoding import diffusion
    >>> diffusion.timesteps(1000, 2)
    [500, 0]
"""

from ember.decoding import diffusion

__all__ = ["diffusion"]
