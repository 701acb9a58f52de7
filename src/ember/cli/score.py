"""``ember score``: a generative run's samples measured by an independent classifier, beside baselines."""

from __future__ import annotations

import argparse
import json
import sys

from ember.cli._format import fmt, table

HELP = """Score a generative run (VAE, GAN, diffusion): sample --n images and compare them with the run's
held-out test images in the feature space of a classifier trained apart on the same data (by default
the most accurate completed classification run on it: ember train configs/mnist-classifier.yaml). These are
domain features, not Inception's: figures compare runs on one data set, not with published FIDs.

columns:
  fd          Fréchet distance between the feature Gaussians (lower is better)
  precision   share of samples within the real images' k-NN manifold (k = 3)
  recall      share of real images within the samples' manifold
  diversity   mean feature distance between samples / between real images (< 0.5: mode collapse?)
  accuracy    the classifier's agreement with the class asked for (class-conditional models)

rows: the run's samples, real images (validation vs test: the ceiling), a Gaussian mixture fitted to
the training images (one full-covariance Gaussian per class), uniform noise. Written to the run
folder as score.json and logged as score/* metrics.

examples:
  ember score latest
  ember score RUN --guidance 3 --sampler ddim --steps 50
  ember score RUN --classifier mnist-classifier-2026 --n 2000
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="Fréchet distance, precision/recall and class accuracy of a generative run's samples",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", help="run id, unique prefix, or 'latest'")
    p.add_argument(
        "--classifier",
        metavar="RUN",
        help="the scoring classifier run (default: the most accurate on the data)",
    )
    p.add_argument("-n", "--n", type=int, default=1000, help="samples and reference images (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples and baselines (default 0)")
    p.add_argument("--sampler", choices=["ddpm", "ddim"], help="diffusion sampler (default ddim)")
    p.add_argument("--steps", type=int, help="diffusion steps (default: 50 for ddim, all for ddpm)")
    p.add_argument("--eta", type=float, help="DDIM noise (default 0)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (default 1: none)")
    p.add_argument("--batch-size", type=int, default=250, help="images made at once (default 250)")
    p.add_argument("--runs-dir", metavar="DIR", help="the run store (default $EMBER_RUNS or ./runs)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ember.cli import UserError
    from ember.cli.generate_images import sampler_options
    from ember.generative.score import score_run

    if args.n < 10:
        raise UserError(
            f"--n must be at least 10 (k-NN radii and covariances need several images); got {args.n}"
        )
    report = score_run(
        args.run,
        classifier=args.classifier,
        n=args.n,
        seed=args.seed,
        batch_size=args.batch_size,
        runs_dir=args.runs_dir,
        log=lambda line: print(line, file=sys.stderr),
        **sampler_options(args),
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
        return 0
    columns = ["fd", "precision", "recall", "diversity", "accuracy"]
    names = {"samples": "samples", "real": "real (held-out)", "mixture": "gaussian mixture", "noise": "noise"}
    rows = [[names[k], *(v.get(c) for c in columns)] for k, v in report.rows.items()]
    options = ", ".join(f"{k}={v}" for k, v in report.options.items()) or "sampler defaults"
    print(f"run {report.run}: {report.n} samples ({options}), features of classifier {report.classifier}")
    print(table(["", *columns], rows))
    if report.per_class:
        print("accuracy per class asked: " + " ".join(fmt(a)[:4] for a in report.per_class))
    if report.heldout_per_class:
        heldout = report.rows["samples"]["heldout_accuracy"]
        print(
            f"held-out paraphrases: accuracy {fmt(heldout)}; per class: "
            + " ".join(fmt(a)[:4] for a in report.heldout_per_class)
        )
    if report.rows["samples"]["diversity"] < 0.5:
        print(
            f"warning: samples are {report.rows['samples']['diversity']:.2f} as diverse as real images: "
            "mode collapse?",
            file=sys.stderr,
        )
    return 0
