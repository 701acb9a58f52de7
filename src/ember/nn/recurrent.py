"""LSTM / GRU over padded batches of variable-length sequences, packed so padding is never read.

``Recurrent`` wraps ``nn.LSTM`` / ``nn.GRU`` (batch first, any number of layers, optionally
bidirectional). Given ``lengths``, it packs the batch (``pack_padded_sequence``, unsorted lengths
allowed), so each sequence's final state is taken at its own last real token, the backward
direction starts there, and outputs at padded positions are zero.

Example:
    >>> import torch
    >>> from ember.nn import Recurrent
    >>> rnn = Recurrent(8, 16, cell="gru", num_layers=2, bidirectional=True)
    >>> out, state = rnn(torch.randn(3, 5, 8), lengths=torch.tensor([5, 2, 4]))
    >>> out.shape, rnn.last_hidden(state).shape
    (torch.Size([3, 5, 32]), torch.Size([3, 32]))
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

# an LSTM's state is (h, c); a GRU's is h; each (num_layers * directions, B, hidden)
State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}


class Recurrent(nn.Module):
    """A multi-layer, optionally bidirectional LSTM or GRU over (B, T, C) with per-sequence lengths.

    Args:
        input_size: features C of each step.
        hidden_size: hidden units per direction.
        cell: ``lstm`` or ``gru``.
        num_layers: stacked layers.
        bidirectional: also run right to left; outputs concatenate both directions.
        dropout: between stacked layers while training.

    Example:
        >>> rnn = Recurrent(4, 6)
        >>> rnn(torch.randn(2, 3, 4))[0].shape
        torch.Size([2, 3, 6])
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        cell: str = "lstm",
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown recurrent cell '{cell}'; expected one of {sorted(CELLS)}")
        self.cell, self.hidden_size, self.num_layers = cell, hidden_size, num_layers
        self.directions = 2 if bidirectional else 1
        self.output_size = hidden_size * self.directions
        self.rnn = CELLS[cell](
            input_size,
            hidden_size,
            num_layers=num_layers,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,  # torch warns about dropout on a single layer
            batch_first=True,
        )

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None, state: State | None = None
    ) -> tuple[torch.Tensor, State]:
        """Run the sequences.

        Args:
            x: (B, T, C) inputs, padded after each sequence's end.
            lengths: (B,) real lengths (1..T), any order; None: every sequence is T long.
            state: initial state (as returned by a previous call), None for zeros.

        Returns:
            outputs (B, T, directions * hidden), zero past each length, and the final state, taken
            at each sequence's last real step.
        """
        if lengths is None:
            return self.rnn(x, state)
        T = x.shape[1]
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, final = self.rnn(packed, state)
        padded, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
        return padded, final

    def last_hidden(self, state: State) -> torch.Tensor:
        """(B, directions * hidden): the top layer's final hidden state, both directions concatenated."""
        h = state[0] if isinstance(state, tuple) else state
        top = h[-self.directions :]  # (directions, B, hidden)
        return top.transpose(0, 1).reshape(h.shape[1], -1)


__all__ = ["Recurrent", "State"]
