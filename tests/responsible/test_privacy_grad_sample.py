"""Per-example gradients: equal to batch-of-1 gradients, and to Opacus's (the reference)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ember.models import create
from ember.responsible.privacy import PerExampleGradients, UnsupportedLayerError


class Mixed(nn.Module):
    """Every supported layer kind: conv1d/2d (grouped too), GroupNorm, LayerNorm, Embedding, Linear on sequences."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, stride=2, padding=1)
        self.grouped = nn.Conv2d(4, 4, 3, padding=1, groups=2, bias=False)
        self.gn = nn.GroupNorm(2, 4)
        self.conv1d = nn.Conv1d(4, 3, 2)
        self.emb = nn.Embedding(7, 3, padding_idx=0)
        self.ln = nn.LayerNorm(3)
        self.seq = nn.Linear(3, 5)
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, 2, 6, 6) floats; ids derived from it so one input carries both
        h = self.gn(self.grouped(torch.tanh(self.conv(x))))  # (B, 4, 3, 3)
        h = self.conv1d(h.flatten(2)).transpose(1, 2)  # (B, 8, 3)
        ids = (x[:, 0, 0, :4].abs() * 10).long() % 7  # (B, 4), repeats likely
        h = torch.cat([h, self.emb(ids)], 1)  # (B, 12, 3)
        return self.head(torch.tanh(self.seq(self.ln(h))).mean(1))


def batch_of_one_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    out = []
    for i in range(len(x)):
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        out.append({n: p.grad.clone() for n, p in model.named_parameters()})
    model.zero_grad()
    return out


@pytest.mark.parametrize(
    "build", [Mixed, lambda: create("dp_cnn_tiny", image_size=8, in_channels=2, num_classes=3)]
)
def test_per_example_gradients_equal_batch_of_one(build) -> None:
    torch.manual_seed(0)
    model = build()
    x, y = (
        torch.randn(6, 2, 6 if isinstance(model, Mixed) else 8, 6 if isinstance(model, Mixed) else 8),
        torch.randint(0, 3, (6,)),
    )
    singles = batch_of_one_grads(model, x, y)
    expected_norms = torch.stack([torch.sqrt(sum(g.square().sum() for g in s.values())) for s in singles])

    grads = PerExampleGradients(model)
    F.cross_entropy(model(x), y).backward()
    torch.testing.assert_close(grads.norms(), expected_norms, rtol=1e-4, atol=1e-6)

    # clipped sum: Σ_i g_i · min(1, C / |g_i|), per parameter
    max_norm = float(expected_norms.median())
    factors = (max_norm / (expected_norms + 1e-6)).clamp(max=1.0)
    summed, norms = grads.clipped_sum(max_norm)
    names = {p: n for n, p in model.named_parameters()}
    assert {names[p] for p in summed} == set(names.values())
    for p, got in summed.items():
        want = sum(f * s[names[p]] for f, s in zip(factors, singles))
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    assert all(not layer.uses for layer in grads.layers)  # cleared for the next step


def test_eval_forward_records_nothing() -> None:
    model = create("dp_cnn_tiny", image_size=8)
    grads = PerExampleGradients(model)
    with torch.no_grad():
        model(torch.randn(2, 1, 8, 8))
    assert all(not layer.uses for layer in grads.layers)


def test_unsupported_layer_is_named() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    with pytest.raises(UnsupportedLayerError, match=r"1 \(BatchNorm1d: weight, bias\)"):
        PerExampleGradients(model)


@pytest.mark.filterwarnings(
    "ignore:Full backward hook is firing:UserWarning"
)  # Opacus's hooks on the first layer
def test_norms_match_opacus() -> None:
    grad_sample = pytest.importorskip("opacus.grad_sample")
    torch.manual_seed(1)
    model = create("dp_cnn", image_size=28)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    reference = grad_sample.GradSampleModule(create("dp_cnn", image_size=28))
    reference.load_state_dict({f"_module.{k}": v for k, v in model.state_dict().items()})
    F.cross_entropy(reference(x), y).backward()
    opacus_norms = torch.cat([p.grad_sample.flatten(1) for p in reference.parameters()], 1).norm(
        dim=1
    )  # loss_reduction="mean" scales by B already

    grads = PerExampleGradients(model)
    F.cross_entropy(model(x), y).backward()
    torch.testing.assert_close(grads.norms(), opacus_norms, rtol=1e-4, atol=1e-6)


def test_tied_weights_are_refused() -> None:
    emb, head = nn.Embedding(5, 4), nn.Linear(4, 5, bias=False)
    head.weight = emb.weight
    with pytest.raises(UnsupportedLayerError, match=r"tied parameters: 1.weight is 0.weight"):
        PerExampleGradients(nn.Sequential(emb, head))
