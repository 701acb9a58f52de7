"""``ember train``: run a recipe, record it, print where it went."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ember.cli._format import metrics_block
from ember.cli.init import add_data_options, survey_and_config

HELP = """Train a recipe (a YAML config) and record the run in the run store.

Overrides are dotted KEY=VALUE pairs after the config, parsed as YAML. Every key is checked before
any work starts; a typo names the key and the closest valid one.

CONFIG may also be your data (a table, a JSONL file of texts, or a folder of class subfolders): ember
then says what it found and trains the config `ember init` would write (kept with the run).

examples:
  ember train configs/digits-cnn.yaml
  ember train adult.csv --target income trainer.epochs=5
  ember train configs/digits-cnn.yaml trainer.epochs=3 optim.lr=0.01
  ember train configs/fashion-resnet.yaml trainer.precision=bf16
  ember train configs/digits-cnn.yaml --resume latest     # continue from the newest checkpoint
  ember train configs/fashion-resnet.yaml --nproc 2        # 2 processes (DDP), data.batch_size global
  ember train configs/digits-cnn.yaml trainer.strategy=fsdp --nproc 2 --max-restarts 1
  torchrun --nproc-per-node 2 -m ember train configs/digits-cnn.yaml   # the same as --nproc 2
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
    p.add_argument("config", help="a recipe YAML, e.g. configs/digits-cnn.yaml, or a data file or folder")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    p.add_argument(
        "--resume", metavar="RUN", help="continue RUN (id, prefix or 'latest') from its newest checkpoint"
    )
    add_data_options(p)
    p.add_argument("--runs-dir", metavar="DIR", help="the run store (default $EMBER_RUNS or ./runs)")
    p.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="train as N processes on this machine, run by torchrun (one per GPU; DDP unless trainer.strategy=fsdp)",
    )
    p.add_argument(
        "--max-restarts",
        type=int,
        default=0,
        metavar="R",
        help="with --nproc: restart the processes up to R times when one fails; they continue the run",
    )
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
    from ember.train import distributed

    if args.nproc is not None:
        return _launch(args)
    config: str | dict[str, Any] = args.config
    if not _is_config(args.config):  # the data itself: survey it and train what `ember init` writes
        _, config = survey_and_config(args.config, args.target, args.text)
    elif args.target or args.text:
        raise ValueError(f"--target and --text are for data, not for a config file ({args.config})")
    try:
        result = train(
            config,
            args.overrides,
            runs_dir=args.runs_dir,
            resume=args.resume,
            progress=args.progress,
        )
    finally:
        distributed.shutdown()
    if not distributed.is_main_process():
        return 0  # rank 0 reports the job's run
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


def _launch(args: argparse.Namespace) -> int:
    """``--nproc N``: this same command, run by torchrun as N processes (`ember.train.launch`)."""
    from ember.errors import UserError
    from ember.train import distributed, launch

    if distributed.world_size() > 1:
        raise UserError(
            "--nproc: this process is already one of a torchrun job; drop --nproc (torchrun sets the ranks)"
        )
    if args.nproc < 1:
        raise UserError(f"--nproc takes a number of processes >= 1; got {args.nproc}")
    if args.max_restarts < 0:
        raise UserError(f"--max-restarts takes a number >= 0; got {args.max_restarts}")
    forwarded = ["train", args.config, *args.overrides]
    for option, value in (("--target", args.target), ("--text", args.text)):
        if value:
            forwarded += [option, value]
    if args.resume:
        forwarded += ["--resume", args.resume]
    if args.runs_dir:
        forwarded += ["--runs-dir", args.runs_dir]
    if args.progress is not None:
        forwarded.append("--progress" if args.progress else "--no-progress")
    return launch.launch(forwarded, nproc=args.nproc, max_restarts=args.max_restarts)


def _is_config(path: str) -> bool:
    """A YAML file (or a path that is not there: the config loader says so) rather than data."""
    p = Path(path)
    return p.suffix.lower() in (".yaml", ".yml") or not p.exists()
