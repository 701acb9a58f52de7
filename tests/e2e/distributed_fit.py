"""Helper of test_distributed.py (not a test): ``gpt_tiny`` fitted through the Python API in this job.

    python distributed_fit.py RUNS VARIANT [VARIANT ...]                           # one process
    torchrun --nproc-per-node 2 distributed_fit.py RUNS strategy=fsdp strategy=ddp  # two ranks

Each VARIANT is a comma-separated list of ``Trainer`` options (``strategy=fsdp,
activation_checkpointing=true``; an empty string: none) added to the same fit: the same weights,
tokens and early stopping on ``val/loss`` with patience 1. The training tokens count up by one;
half of the validation tokens count up by three, so the validation loss falls while the model
learns the shared start and rises once it is sure of "+1": training stops after the third epoch
and ends with the second's weights. Every epoch is checkpointed. Rank 0 prints one JSON line per
variant: the run id and what only the live model can tell (its checkpointed and sharded blocks).
"""

from __future__ import annotations

import json
import sys

import torch

from ember import Trainer, models
from ember.nn import checkpointing
from ember.train import distributed

VOCAB, LENGTH = 16, 16
OPTIONS = {
    "epochs": 6,
    "batch_size": 16,
    "lr": 0.01,
    "early_stopping_metric": "val/loss",
    "early_stopping_patience": 1,
    "monitor": "val/loss",
    "checkpoint_min_interval": 0,
    "keep_last": 10,
    "deterministic": True,
    "progress": False,
}


def tokens() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, next tokens) for training (64 sequences) and validation (32)."""
    g = torch.Generator().manual_seed(0)
    t = torch.arange(LENGTH + 1)
    train = (torch.randint(0, VOCAB, (64, 1), generator=g) + t) % VOCAB
    starts = torch.randint(0, VOCAB, (32, 1), generator=g)
    val = torch.cat([(starts[:16] + t) % VOCAB, (starts[16:] + 3 * t) % VOCAB])
    return (train[:, :-1], train[:, 1:]), (val[:, :-1], val[:, 1:])


def parse(variant: str) -> dict[str, object]:
    options: dict[str, object] = {}
    for item in filter(None, variant.split(",")):
        key, value = item.split("=", 1)
        options[key] = {"true": True, "false": False}.get(value, value)
    return options


def main(argv: list[str]) -> None:
    from torch.distributed.fsdp import FSDPModule

    runs, variants = argv[0], argv[1:]
    train, val = tokens()
    for variant in variants:
        torch.manual_seed(0)
        # no biases: a key's bias gets a zero gradient up to rounding (softmax ignores a shift shared
        # by all keys), which Adam would turn into full steps of any sign, apart for every job size
        model = models.create("gpt_tiny", vocab_size=VOCAB, block_size=LENGTH, bias=False)
        trainer = Trainer(model, task="language_model", runs_dir=runs, **{**OPTIONS, **parse(variant)})
        result = trainer.fit(train, val)
        blocks = checkpointing.find_blocks(model)
        if distributed.is_main_process():
            line = {
                "variant": variant,
                "run_id": result.run_id,
                "checkpointed": len(checkpointing.checkpointed_blocks(model)),
                "sharded": sum(isinstance(b, FSDPModule) for b in blocks),
                "blocks": len(blocks),
            }
            print(json.dumps(line), flush=True)
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
