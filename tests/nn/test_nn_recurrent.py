"""Recurrent: packed variable-length batches equal running each sequence alone."""

import pytest
import torch

from ember.nn import Recurrent


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_equals_unpacked_on_equal_lengths(cell: str, bidirectional: bool) -> None:
    torch.manual_seed(0)
    rnn = Recurrent(5, 7, cell=cell, num_layers=2, bidirectional=bidirectional).eval()
    x = torch.randn(3, 6, 5)
    plain_out, plain_state = rnn(x)
    packed_out, packed_state = rnn(x, lengths=torch.tensor([6, 6, 6]))
    torch.testing.assert_close(packed_out, plain_out)
    for a, b in zip(
        plain_state if isinstance(plain_state, tuple) else (plain_state,),
        packed_state if isinstance(packed_state, tuple) else (packed_state,),
    ):
        torch.testing.assert_close(a, b)
    # the reference: torch's own module run on the padded batch
    ref_out, _ = rnn.rnn(x)
    torch.testing.assert_close(plain_out, ref_out)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_variable_lengths_match_each_sequence_alone(cell: str) -> None:
    torch.manual_seed(0)
    rnn = Recurrent(4, 6, cell=cell, num_layers=2, bidirectional=True).eval()
    lengths = torch.tensor([2, 5, 3])  # unsorted on purpose
    x = torch.randn(3, 5, 4)
    x_padded = x.clone()
    for i, n in enumerate(lengths.tolist()):
        x_padded[i, n:] = 99.0  # padding content must not matter
    out, state = rnn(x_padded, lengths=lengths)
    last = rnn.last_hidden(state)
    for i, n in enumerate(lengths.tolist()):
        alone_out, alone_state = rnn(x[i : i + 1, :n])
        torch.testing.assert_close(out[i : i + 1, :n], alone_out, atol=1e-6, rtol=1e-5)
        assert torch.all(out[i, n:] == 0)  # nothing is produced past the end
        torch.testing.assert_close(last[i : i + 1], rnn.last_hidden(alone_state), atol=1e-6, rtol=1e-5)
    assert out.shape == (3, 5, 12) and last.shape == (3, 12)


def test_last_hidden_takes_top_layer_both_directions() -> None:
    rnn = Recurrent(3, 4, cell="gru", num_layers=2, bidirectional=True).eval()
    out, h = rnn(torch.randn(2, 5, 3))
    last = rnn.last_hidden(h)
    torch.testing.assert_close(last[:, :4], out[:, -1, :4])  # forward direction ends at the last step
    torch.testing.assert_close(last[:, 4:], out[:, 0, 4:])  # backward direction ends at the first


def test_unknown_cell_is_named() -> None:
    with pytest.raises(ValueError, match="'rnn'.*gru"):
        Recurrent(3, 4, cell="rnn")
