"""ember.generative: the generation stage, beside evaluate, deploy and responsible.

It reads a finished generative run: `score` (``ember score``: Fréchet distance, precision/recall
and class accuracy in an independent classifier's features, beside `baselines`), `images` (grids,
PNG) and `runs` (a run's task and model, by what the task can do). The decoding functions that
models and tasks also use (sampling, beam search, the diffusion samplers) live lower, in
:mod:`ember.decoding`.
"""

__all__: list[str] = []
