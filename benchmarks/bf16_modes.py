"""Two ways to serve a model in bf16 on a CPU, against eager fp32: which one ``ember plan`` builds.

- ``copy``: ``ember.deploy.quantize.bf16`` (the weights cast to bf16 once; float32 in and out);
- ``autocast``: the fp32 model under ``torch.autocast("cpu", torch.bfloat16)`` (weights cast on
  every call), outputs cast back to float32.

Models (untrained: latency and rounding do not depend on training): an MLP 64-256-256-10, the zoo's
``cnn`` on 1x8x8 images and a ``gpt`` of 4 layers x 4 heads x 256 at context 256 (the char GPT
recipe's shape). The variants take turns (``bench.measure``); "x eager" is the median of per-round
ratios, the relative error is RMS of the difference over RMS of eager's outputs.

Usage:
    python benchmarks/bf16_modes.py --threads 1 --rounds 5
"""

from __future__ import annotations

import argparse

import _common
import torch
from torch import nn

import ember
from ember.deploy import bench, quantize


class Autocast(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", torch.bfloat16):
            return self.model(x).float()


def workloads() -> dict[str, tuple[nn.Module, torch.Tensor, tuple[int, ...]]]:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    cnn = ember.models.create("cnn", in_channels=1, num_classes=10, image_size=8)
    gpt = ember.models.create(
        "gpt", vocab_size=65, num_layers=4, num_heads=4, embed_dim=256, block_size=256, dropout=0.0
    )
    return {
        "mlp": (mlp.eval(), torch.rand(64, 64), (1, 64)),
        "cnn": (cnn.eval(), torch.rand(64, 1, 8, 8), (1, 64)),
        "gpt": (gpt.eval(), torch.randint(0, 65, (16, 256)), (1, 16)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--round-s", type=float, default=0.2)
    args = parser.parse_args()
    _common.set_threads(args.threads)
    print(_common.machine(), f"bf16 path: {quantize.bf16_fast_path() or 'emulated'}", flush=True)
    rows = []
    for name, (model, x, sizes) in workloads().items():
        variants = {"eager": model, "copy": quantize.bf16(model), "autocast": Autocast(model)}
        with torch.inference_mode():
            ref = model(x[:8]).double()
            errors = {
                k: float((v(x[:8]).double() - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt())
                for k, v in variants.items()
            }
        timed = bench.measure(
            variants, x, batch_sizes=sizes, baseline="eager", threads=args.threads,
            rounds=args.rounds, round_s=args.round_s,
        )  # fmt: skip
        for r in timed:
            rows.append(
                [
                    name, r.variant, str(r.batch_size), f"{errors[r.variant]:.2g}", f"{r.p50_ms:.3f}",
                    f"{r.ratio:.2f}x ({_common.spread(list(r.ratio_spread))})",
                ]
            )  # fmt: skip
    print(_common.table(["model", "variant", "batch", "rel. err", "p50 ms", "x eager"], rows))


if __name__ == "__main__":
    main()
