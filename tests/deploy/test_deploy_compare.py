"""bench.compare on a task's own scores: the drop and the verdict follow the metric's direction."""

from __future__ import annotations

import torch
from torch import nn

from ember.deploy import bench


def test_a_lower_is_better_metric_reads_as_a_change_of_that_metric() -> None:
    model = nn.Linear(4, 3)
    variants = {"fp32": model, "same": model}
    x = torch.randn(16, 4)
    (_, other) = bench.compare(
        variants, x, scores={"fp32": 2.0, "same": 2.5}, metric="loss", mode="min",
        batch_sizes=(1,), rounds=1, round_s=0.001,
    )  # fmt: skip
    assert other.drop == 0.5 and other.metric == "loss"  # a higher loss is worse by 0.5
    # the same model timed twice may come out faster or not (one 1 ms round): either verdict must
    # read the higher loss as a loss, never as a gain
    assert ("loses 0.5 of loss" if other.faster else "loss +0.5") in other.verdict
    assert "-0.5" not in other.verdict and not other.verdict.startswith("better")


def test_two_inputs_are_timed_and_compared_together() -> None:
    class Pair(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return a + b.float().unsqueeze(1)

    rows = bench.compare(
        {"fp32": Pair(), "again": Pair()}, (torch.randn(8, 3), torch.arange(8)),
        scores={"fp32": 0.9, "again": 0.8}, batch_sizes=(1, 4), rounds=1, round_s=0.001,
    )  # fmt: skip
    assert rows[1].max_abs_error == 0.0 and abs(rows[1].drop - 0.1) < 1e-9
    assert set(rows[1].latency) == {1, 4}
