"""ember.generative: the generation stage, beside evaluate, deploy and responsible.

It will hold what reads a finished generative run (sampling from it, scoring its samples). The
decoding functions that models and tasks also use (sampling, beam search) live lower, in
:mod:`ember.decoding`; ``ember generate`` decodes with them today.
"""

__all__: list[str] = []
