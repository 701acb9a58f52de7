"""Diffusion sampling: DDIM at 50 steps against DDPM at all 1,000, time and Fréchet distance side by side.

A trained class-conditional diffusion run (``configs/mnist-ddpm.yaml``) samples with both samplers.
Time: each variant makes a batch of ``--timing-n`` images (the same labels and seed), the variants
take turns for ``--rounds`` rounds, order rotated; the speed-up is the median of per-round ratios.
Quality: ``--n`` images from each sampler (balanced labels) against ``--n`` held-out test images,
in the features of the independent classifier (``configs/mnist-classifier.yaml``): Fréchet
distance, precision and recall, and the classifier's accuracy on the class asked for; the real
validation images give the scale (what a perfect sampler would score).

Usage:
    python benchmarks/diffusion.py --run latest:mnist-ddpm             # 2 threads, n = 1000, 5 rounds
    python benchmarks/diffusion.py --run RUN --n 500 --guidance 3 --rounds 3
    python benchmarks/diffusion.py --run RUN --checkpoint RUN/checkpoints/step-000825.safetensors
    python benchmarks/diffusion.py --run RUN --eta 1 --quality ddim-50   # stochastic DDIM, its FD alone

``--checkpoint`` samples with the weights of one of the run's checkpoints (the moving average of a
diffusion model included): a run stopped before its last epoch, measured as far as it got.
"""

from __future__ import annotations

import argparse
import json
import time

import _common
import torch

from ember.generative import runs as generative_runs
from ember.generative.score import (
    features,
    find_classifier,
    frechet_distance,
    precision_recall,
    sample_in_batches,
)
from ember.tasks.generative import balanced_labels

VARIANTS = {"ddpm-1000": {"sampler": "ddpm", "steps": 1000}, "ddim-50": {"sampler": "ddim", "steps": 50}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="latest:mnist-ddpm", help="a class-conditional diffusion run")
    parser.add_argument("--classifier", help="the scoring classifier run (default: newest on the data)")
    parser.add_argument("--runs-dir", help="the run store (default $EMBER_RUNS or ./runs)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--timing-n", type=int, default=64, help="images per timed batch")
    parser.add_argument("--n", type=int, default=1000, help="images per sampler for the Fréchet distance")
    parser.add_argument("--guidance", type=float, default=1.0)
    parser.add_argument(
        "--eta", type=float, default=0.0, help="DDIM's noise (0: deterministic; 1: stochastic)"
    )
    parser.add_argument(
        "--quality",
        default="ddpm-1000,ddim-50",
        help="the samplers whose Fréchet distance is measured (DDPM-1000's takes long: leave it out to "
        "measure DDIM alone, seeds and references as always)",
    )
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--checkpoint", help="sample with this checkpoint's weights (a run not finished)")
    args = parser.parse_args(argv)
    _common.set_threads(args.threads)
    print(_common.machine())
    if args.checkpoint:
        loaded = from_checkpoint(args.run, args.checkpoint, args.runs_dir)
    else:
        loaded = generative_runs.load(args.run, runs_dir=args.runs_dir, device="cpu")
    task, model, prep = loaded.task, loaded.model, loaded.prep
    classes = task.sample_classes(model)
    options = {"guidance": args.guidance}
    VARIANTS["ddim-50"]["eta"] = args.eta

    def timed(name: str, n: int) -> float:
        labels = balanced_labels(n, classes) if classes else None
        start = time.perf_counter()
        task.sample(
            model, n, labels=labels, generator=torch.Generator().manual_seed(0), **VARIANTS[name], **options
        )
        return time.perf_counter() - start

    timed("ddim-50", 4)  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for r in range(args.rounds):
        for name in _common.rotate(list(VARIANTS), r):
            seconds[name].append(timed(name, args.timing_n))
            print(f"round {r + 1}: {name} {seconds[name][-1]:.1f}s", flush=True)
    ratios = [slow / fast for slow, fast in zip(seconds["ddpm-1000"], seconds["ddim-50"])]

    scorer_id = find_classifier(
        args.classifier, prep.config.data.name, prep.bundle.input_shape, runs_dir=args.runs_dir
    )
    scorer = generative_runs.load(scorer_id, runs_dir=args.runs_dir, device="cpu").model
    reference = prep.test if prep.test is not None else prep.val
    n = min(args.n, len(reference), len(prep.val))
    pick = torch.randperm(len(reference), generator=torch.Generator().manual_seed(0))[:n]
    ref_feats, _ = features(scorer, reference.x[pick])
    labels = balanced_labels(n, classes) if classes else None
    quality: dict[str, dict[str, float]] = {}
    for name in [v for v in VARIANTS if v in args.quality.split(",")]:
        start = time.perf_counter()
        images = sample_in_batches(task, model, n, labels=labels, seed=1, **VARIANTS[name], **options)
        feats, logits = features(scorer, images)
        precision, recall = precision_recall(ref_feats, feats)
        quality[name] = {"fd": frechet_distance(ref_feats, feats), "precision": precision, "recall": recall}
        if labels is not None:
            quality[name]["accuracy"] = float((logits.argmax(1) == labels).float().mean())
        quality[name]["seconds"] = time.perf_counter() - start
        print(f"{name}: {n} images in {quality[name]['seconds']:.0f}s", flush=True)
    real = prep.val.x[torch.randperm(len(prep.val), generator=torch.Generator().manual_seed(1))[:n]]
    real_feats, _ = features(scorer, real)
    precision, recall = precision_recall(ref_feats, real_feats)
    quality["real (val)"] = {
        "fd": frechet_distance(ref_feats, real_feats),
        "precision": precision,
        "recall": recall,
    }

    print()
    print(
        f"run {loaded.record.id}, guidance {args.guidance}, {args.threads} threads; time: batches of "
        f"{args.timing_n}, {args.rounds} rounds; quality: {n} images each vs {n} held-out, features of {scorer_id}"
    )
    rows = []
    for name, q in quality.items():
        t = _common.median(seconds[name]) if name in seconds else None
        rows.append(
            [
                name,
                "-" if t is None else f"{t:.1f}",
                "-" if t is None else f"{args.timing_n / t:.2f}",
                f"{q['fd']:.2f}",
                f"{q['precision']:.3f}",
                f"{q['recall']:.3f}",
                f"{q['accuracy']:.3f}" if "accuracy" in q else "-",
            ]
        )
    print(_common.table(["sampler", "s / batch", "images/s", "FD", "precision", "recall", "accuracy"], rows))
    print(f"DDIM-50 speed-up over DDPM-1000: {_common.median(ratios):.1f}x (range {_common.spread(ratios)})")
    if "ddim-50" in quality and "ddpm-1000" in quality:
        print(
            f"DDIM-50 Fréchet distance / DDPM-1000's: {quality['ddim-50']['fd'] / quality['ddpm-1000']['fd']:.3f}"
        )
    if args.json:
        result = {
            "seconds": seconds,
            "ratios": ratios,
            "quality": quality,
            "n": n,
            "guidance": args.guidance,
            "eta": args.eta,
        }
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


def from_checkpoint(ref: str, checkpoint: str, runs_dir: str | None) -> generative_runs.Loaded:
    """Run ``ref`` rebuilt from its config and splits, with the model weights of ``checkpoint``."""
    from pathlib import Path

    from ember.config import load_config, parse_yaml
    from ember.data import load_splits
    from ember.recipe import build_task, prepare
    from ember.track import RunStore
    from ember.train.checkpoint import load_checkpoint

    record = RunStore(runs_dir).get(ref)
    cfg = load_config(parse_yaml(record.config))
    prep = prepare(cfg, splits=load_splits(record.folder / "splits"), runs_dir=runs_dir, saved=record.folder)
    ckpt = load_checkpoint(Path(checkpoint))
    prep.model.load_state_dict(ckpt.model)
    where = ckpt.meta.get("position", {})
    print(f"weights: {checkpoint} (step {where.get('step')}, epoch {where.get('epoch')})")
    model = prep.model.eval()
    return generative_runs.Loaded(model, build_task(cfg, prep.bundle), prep, record, torch.device("cpu"))


if __name__ == "__main__":
    main()
