"""The GPT classifier: the LM's trunk under the LM's names, padding ignored, last or mean pooling."""

import pytest
import torch

from ember import models


@pytest.mark.parametrize("pool", ["last", "mean"])
def test_gpt_classifier_ignores_right_padding(pool: str) -> None:
    torch.manual_seed(0)
    model = models.create("gpt_classifier_tiny", vocab_size=30, num_classes=3, pool=pool).eval()
    short = torch.tensor([[5, 6, 7], [8, 9, 10]])
    padded = torch.cat([short, torch.zeros(2, 4, dtype=torch.long)], dim=1)  # pad_id 0
    with torch.no_grad():
        torch.testing.assert_close(model(padded), model(short), atol=1e-5, rtol=1e-5)
        ragged = torch.tensor([[5, 6, 7, 0, 0], [8, 9, 10, 11, 12]])
        torch.testing.assert_close(model(ragged)[0], model(short[:1])[0], atol=1e-5, rtol=1e-5)
        # an explicit mask says the same as pad ids do
        torch.testing.assert_close(model(ragged, ragged != 0), model(ragged))


def test_last_pooling_reads_the_last_real_token_of_the_trunk() -> None:
    torch.manual_seed(0)
    model = models.create("gpt_classifier_tiny", vocab_size=30, num_classes=3).eval()
    lm = models.create("gpt_tiny", vocab_size=30).eval()
    lm.load_state_dict(model.state_dict(), strict=False)  # the same trunk: every LM tensor has a twin
    ids = torch.tensor([[5, 6, 7, 0], [8, 9, 10, 11]])
    with torch.no_grad():
        hidden = lm.forward_features(ids)  # (B, T, C)
        feats = model.forward_features(ids)
    torch.testing.assert_close(feats, torch.stack([hidden[0, 2], hidden[1, 3]]))
    assert set(lm.state_dict()) == set(model.state_dict()) - {"head.weight", "head.bias"}


def test_gpt_classifier_refuses_an_unknown_pool_and_a_long_input() -> None:
    with pytest.raises(ValueError, match="unknown pool 'max'"):
        models.create("gpt_classifier_tiny", pool="max")
    with pytest.raises(ValueError, match="block_size is 8"):
        models.create("gpt_classifier_tiny", block_size=8)(torch.ones(1, 9, dtype=torch.long))
