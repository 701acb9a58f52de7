"""``ember train``: run a recipe, record it, print where it went."""

from __future__ import annotations

import argparse
import json

from ember.cli._format import metrics_block

HELP = """Train a recipe (a YAML config) and record the run in the run store.

Overrides are dotted KEY=VALUE pairs after the config, parsed as YAML. Every key is checked before
any work starts; a typo names the key and the closest valid one.

examples:
  ember train configs/digits-cnn.yaml
  ember train configs/digits-cnn.yaml trainer.epochs=3 optim.lr=0.01
  ember train configs/fashion-resnet.yaml trainer.precision=bf16
  ember train configs/digits-cnn.yaml --resume latest     # continue from the newest checkpoint
  ember train configs/finetune-brown-genre.yaml model.pretrained=latest:pretrain-brown-lm model.lora.rank=8

config keys:
"""


def register(sub: argparse._SubParsersAction) -> None:
    from ember.config import describe

    p = sub.add_parser(
        "train",
        help="train a recipe from a YAML config",
        description=HELP + describe(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="a recipe YAML, e.g. configs/digits-cnn.yaml")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    p.add_argument(
        "--resume", metavar="RUN", help="continue RUN (id, prefix or 'latest') from its newest checkpoint"
    )
    p.add_argument("--runs-dir", metavar="DIR", help="the run store (default $EMBER_RUNS or ./runs)")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument(
        "--progress", dest="progress", action="store_true", default=None, help="always show the progress bar"
    )
    bar.add_argument(
        "--no-progress", dest="progress", action="store_false", help="never show the progress bar"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ember.responsible.training import train  # the recipe, plus fairness.mitigate when set

    result = train(
        args.config, args.overrides, runs_dir=args.runs_dir, resume=args.resume, progress=args.progress
    )
    pretrained = result.run_dir / "pretrained.json"
    if pretrained.is_file():  # a fine-tuned run: say what it started from
        info = json.loads(pretrained.read_text())
        new = ", ".join(info["missing"][:6]) or "none"
        print(
            f"initialised from {info['source']}: {len(info['loaded'])} tensors loaded, new: {new}; {info['trainable']}"
        )
    print(
        f"trained {result.steps} steps in {result.seconds:.1f}s"
        + (f" ({result.stop_reason})" if result.stop_reason else "")
    )
    print(metrics_block({k: v for k, v in result.metrics.items() if k.startswith(("val/", "test/"))}))
    print(f"run {result.run_id} {result.run_dir}")
    return 0
