import pytest
import torch
import torch.nn.functional as F

from ember.nn import get_activation, list_activations

REFERENCE = {
    "relu": F.relu,
    "gelu": F.gelu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "silu": F.silu,
    "identity": lambda x: x,
}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_activation_matches_torch_functional(name: str) -> None:
    x = torch.randn(4, 7)
    assert torch.equal(get_activation(name)(x), REFERENCE[name](x))


def test_every_listed_activation_is_checked() -> None:
    assert set(list_activations()) == set(REFERENCE)


def test_each_call_returns_a_new_module() -> None:
    assert get_activation("relu") is not get_activation("relu")


def test_unknown_activation_suggests_the_closest() -> None:
    with pytest.raises(KeyError, match="did you mean 'relu'"):
        get_activation("rleu")
