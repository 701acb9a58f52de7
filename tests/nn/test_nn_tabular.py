"""TabularStem against the plain computation: standardize, PLE, indicators, one-hot, embeddings."""

from __future__ import annotations

import pytest
import torch

from ember.nn.tabular import TabularStem, embedding_size


def test_stem_matches_the_plain_computation() -> None:
    torch.manual_seed(0)
    stem = TabularStem(
        num_numeric=2, num_binary=1, cardinalities=[3, 30],
        mean=[1.0, 5.0], std=[2.0, 10.0], edges=[[0.0, 10.0, 100.0], [0.0, 1.0]],
    )  # fmt: skip
    x = torch.tensor([[50.0, 7.0, 1.0, 2.0, 29.0], [-3.0, 0.5, 0.0, 9.0, 0.0]])
    out = stem(x)
    numbers = torch.stack([(x[:, 0] - 1.0) / 2.0, (x[:, 1] - 5.0) / 10.0], dim=1)

    def ple(v: float, edges: list[float], bins: int) -> list[float]:
        out = [min(max((v - lo) / (hi - lo), 0.0), 1.0) for lo, hi in zip(edges[:-1], edges[1:])]
        return out + [0.0] * (bins - len(out))

    bins = torch.tensor([ple(float(r[0]), [0, 10, 100], 2) + ple(float(r[1]), [0, 1], 2) for r in x])
    one_hot = torch.nn.functional.one_hot(x[:, 3].long().clamp(0, 2), 3).float()  # code 9 is out of range
    embedded = stem.embeddings[1].weight[x[:, 4].long()]
    expected = torch.cat([numbers, x[:, 2:3], bins, one_hot, embedded], dim=1)
    # the stem lays out [numbers | indicators | bins | categories]
    torch.testing.assert_close(out, expected)
    assert out.shape[1] == stem.out_features == 2 + 1 + 4 + 3 + embedding_size(30)
    assert not stem.embeddings[0].weight.requires_grad  # one-hot: nothing to learn


def test_stem_says_what_input_it_expects() -> None:
    stem = TabularStem(num_numeric=1, cardinalities=[5])
    with pytest.raises(ValueError, match="2 encoded values .*preprocess.json"):
        stem(torch.zeros(4, 3))


def test_bin_layers_are_one_linear_layer_per_column() -> None:
    torch.manual_seed(0)
    stem = TabularStem(num_numeric=2, edges=[[0.0, 1.0, 2.0], [0.0, 5.0, 7.0, 9.0]], bin_dim=4)
    x = torch.tensor([[1.5, 6.0], [-1.0, 10.0]])
    out = stem(x)
    expected = [(x - stem.mean) / stem.std]
    for i in range(2):
        ple = ((x[:, i, None] - stem.bin_lo[i]) / stem.bin_width[i]).clamp(0, 1)
        expected.append(torch.relu(ple @ stem.bin_weight[i] + stem.bin_bias[i]))
    torch.testing.assert_close(out, torch.cat(expected, dim=1))
    assert out.shape[1] == stem.out_features == 2 + 2 * 4
