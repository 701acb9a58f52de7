"""Serving latency of compressed / re-routed models against eager fp32, and what ``ember plan`` picks.

Three trained models, each run as:

- ``eager``: the fp32 ``nn.Module`` under ``torch.inference_mode`` (the baseline);
- ``int8-dynamic``: ``ember.deploy.quantize.dynamic_int8`` (torch's dynamic int8, Linear layers);
- ``bf16``: ``ember.deploy.quantize.bf16`` (a bfloat16 copy, float32 in and out);
- ``ort-fp32``: ONNX Runtime on the verified export (``ember.deploy.quantize.onnx_fp32``);
- ``ort-int8``: ONNX Runtime dynamic int8 of the MatMul/Gemm weights (``quantize.onnx_int8``);
- ``plan``: whatever ``ember.deploy.placement.plan`` chose for this thread count (its backends:
  eager, bf16, int8-dynamic, onnxruntime, onnxruntime-int8, plus ONNX Runtime static int8 calibrated
  on training inputs; add ``--compiled`` for torch.compile of the fp32 and bf16 models), rebuilt
  from the plan with ``placement.runner``. It is checked on the held-out split: fp32 backends within
  1e-4 of eager, bf16 within 2% relative error, int8 and bf16 within 0.5 point of eager's accuracy,
  and must be faster than eager at batch 1 and 64.

Models: the zoo's ``transformer_encoder`` (4 layers, d 256, 4 heads, MLP x4; seq 128 with padding
masks) trained on a synthetic token-frequency task; ``mlp`` (64-256-256-10) and ``cnn``
(32-64-128 channels) trained on the 8x8 digits. Accuracy is on held-out examples.

Every timing table comes from one ``bench.compare`` call: the variants take turns (order rotated
each round), p50/p99 are over single calls, and "x eager" is the median of per-round ratios.

Usage:
    python benchmarks/compress.py                                  # all models, 1 and 2 threads
    python benchmarks/compress.py --models encoder --threads 1 --rounds 7
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import _common
import torch
from torch import nn

import ember
from ember.data import load_dataset
from ember.deploy import bench, placement, quantize

VOCAB, CLASSES, SEQ = 1000, 4, 128


@dataclass
class Workload:
    name: str
    model: nn.Module
    x_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float, batch: int) -> None:
    with tempfile.TemporaryDirectory() as runs:
        trainer = ember.Trainer(
            model, lr=lr, epochs=epochs, batch_size=batch, runs_dir=runs, progress=False, seed=0
        )
        trainer.fit((x, y))
    model.eval()


def digits_models(kinds: list[str]) -> list[Workload]:
    data = load_dataset("digits").train
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(data.x), generator=g)
    train, test = order[:1400], order[1400:]
    out = []
    for kind in kinds:
        torch.manual_seed(0)
        model = ember.models.create(kind, in_channels=1, num_classes=10, image_size=8)
        _train(model, data.x[train], data.y[train], epochs=15, lr=3e-3, batch=64)
        out.append(Workload(kind, model, data.x[train], data.x[test], data.y[test]))
    return out


def token_task(n: int, length: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded token sequences whose class decides which 50 tokens are over-represented."""
    y = torch.randint(0, CLASSES, (n,), generator=g)
    ids = torch.randint(1, VOCAB, (n, length), generator=g)
    signal = 1 + y[:, None] * 50 + torch.randint(0, 50, (n, length), generator=g)
    ids = torch.where(torch.rand(n, length, generator=g) < 0.15, signal, ids)
    lengths = torch.randint(length // 2, length + 1, (n,), generator=g)
    ids[torch.arange(length)[None, :] >= lengths[:, None]] = 0  # padding
    return ids, y


def encoder_model() -> Workload:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = ember.models.create(
        "transformer_encoder", vocab_size=VOCAB, num_classes=CLASSES, max_len=SEQ, dropout=0.0
    )
    # trained on 32-token sequences (4x cheaper); the same signal holds at the 128 tokens it is timed on
    x, y = token_task(3072, 32, g)
    _train(model, x, y, epochs=1, lr=1e-3, batch=32)
    x_test, y_test = token_task(512, SEQ, g)
    x_cal, _ = token_task(256, SEQ, g)
    return Workload("encoder", model, x_cal, x_test, y_test)


def variants_for(w: Workload, threads: int, workdir: Path, backends: list[str], log: Callable[[str], None]):  # type: ignore[no-untyped-def]
    example = w.x_test[:64]
    variants: dict[str, object] = {"eager": w.model, "bf16": quantize.bf16(w.model)}
    try:
        variants["int8-dynamic"] = quantize.dynamic_int8(w.model)
    except ValueError as e:
        log(f"  int8-dynamic skipped: {e}")
    variants["ort-fp32"] = quantize.onnx_fp32(w.model, example, workdir=workdir / "ort", threads=threads)
    variants["ort-int8"] = quantize.onnx_int8(w.model, example, workdir=workdir / "ort", threads=threads)
    started = time.perf_counter()
    chosen = placement.plan(
        w.model,
        example,
        backends=backends,
        threads=(threads,),
        batch_sizes=(1, 64),
        heldout=(w.x_test, w.y_test),
        calibration=w.x_train[:512],
        workdir=workdir / "plan",
    )
    log(
        f"  plan ({time.perf_counter() - started:.0f}s): {chosen.backend} ({chosen.quantization or 'fp32'}), "
        f"max_batch {chosen.max_batch}; {chosen.reason}"
    )
    for key, why in chosen.rejected.items():
        log(f"    rejected {key}: {why}")
    for name, q in chosen.quality.items():
        log(f"    {name}: relative error {q['relative_error']:.2g}, max abs error {q['max_abs_error']:.2g}")
    variants[f"plan: {chosen.backend}" + ("-static" if chosen.quantization == "static" else "")] = (
        placement.runner(chosen, w.model)
    )
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="encoder,mlp,cnn")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--round-s", type=float, default=0.3)
    parser.add_argument(
        "--compiled", action="store_true", help="let the plan try torch.compile (fp32 and bf16) too"
    )
    args = parser.parse_args()
    kinds = [k.strip() for k in args.models.split(",")]
    backends = ["eager", "bf16", "int8-dynamic", "onnxruntime", "onnxruntime-int8"] + (
        ["compiled", "compiled-bf16"] if args.compiled else []
    )

    def log(line: str) -> None:
        print(line, flush=True)

    log(_common.machine())
    workloads = ([encoder_model()] if "encoder" in kinds else []) + digits_models(
        [k for k in kinds if k in ("mlp", "cnn")]
    )
    for w in workloads:
        for threads in [int(t) for t in args.threads.split(",")]:
            _common.set_threads(threads)
            log(f"\n### {w.name}, {threads} thread(s), {len(w.x_test)} held-out examples")
            with tempfile.TemporaryDirectory() as tmp:
                variants = variants_for(w, threads, Path(tmp), backends, log)
                rows = bench.compare(
                    variants,
                    w.x_test,
                    w.y_test,
                    baseline="eager",
                    batch_sizes=(1, 64),
                    threads=threads,
                    rounds=args.rounds,
                    round_s=args.round_s,
                )
            table = []
            for r in rows:
                one, big = r.latency[1], r.latency[64]
                table.append(
                    [
                        r.variant,
                        f"{100 * (r.score or 0):.2f}",
                        f"{-100 * (r.drop or 0):+.2f}",
                        f"{r.max_abs_error:.2g}",
                        f"{r.size_bytes / 1024:.0f}",
                        f"{one.p50_ms:.3f}",
                        f"{one.p99_ms:.3f}",
                        f"{one.ratio:.2f}x ({_common.spread([one.ratio_spread[0], one.ratio_spread[1]])})",
                        f"{big.p50_ms:.2f}",
                        f"{big.p99_ms:.2f}",
                        f"{big.ratio:.2f}x ({_common.spread([big.ratio_spread[0], big.ratio_spread[1]])})",
                    ]
                )
            head = [
                "variant",
                "acc %",
                "Δ pt",
                "max |Δ|",
                "KiB",
                "p50@1 ms",
                "p99@1",
                "x eager @1",
                "p50@64 ms",
                "p99@64",
                "x eager @64",
            ]
            log(_common.table(head, table))


if __name__ == "__main__":
    main()
