"""Helper of test_distributed.py (not a test): sharded checkpoints loaded at this job's world size.

    python fsdp_states.py CKPT=OUT [CKPT=OUT ...] [--save-to DIR]            # one process
    torchrun --nproc-per-node 2 fsdp_states.py CKPT=OUT ... [--save-to DIR]  # two ranks

For each pair, the digits recipe's model and optimizer (the test's overrides) are built, sharded
with fully_shard over this job's ranks, loaded from the sharded checkpoint CKPT
(``ember.train.fsdp.restore_sharded``), and their whole state, model and optimizer gathered from
the shards, is saved to OUT (a safetensors file, by rank 0). ``--save-to`` writes the first loaded
state as a sharded checkpoint again, from this world size.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from ember.config import load_config
from ember.recipe.build import prepare
from ember.train import distributed, fsdp
from ember.train.optim import build_optimizer
from ember.train.precision import resolve_precision
from ember.train.state import TrainState

OVERRIDES = ["model.name=cnn_tiny", "model.norm=group", "trainer.strategy=fsdp"]


def load(checkpoint: Path) -> tuple[TrainState, distributed.Parallel]:
    cfg = load_config("configs/digits-cnn.yaml", OVERRIDES)
    model = prepare(cfg).model
    cpu = torch.device("cpu")
    parallel = distributed.setup("fsdp", cpu, seed=cfg.trainer.seed)
    assert parallel is not None
    distributed.wrap(model, parallel)
    optimizer = build_optimizer(model, cfg.optim)
    state = TrainState(
        model=model,
        optimizer=optimizer,
        precision=resolve_precision("fp32", cpu),
        device=cpu,
        epochs=1,
        total_steps=1,
        steps_per_epoch=1,
    )
    fsdp.restore_sharded(checkpoint, state, parallel)
    return state, parallel


def whole_state(state: TrainState) -> dict[str, torch.Tensor]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    tensors = {f"model/{k}": v for k, v in fsdp.full_state_dict(state.model).items()}
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    optim = get_optimizer_state_dict(state.model, state.optimizer, options=options)
    for name, slots in optim.get("state", {}).items():
        for slot, value in slots.items():
            tensors[f"optim/{name}/{slot}"] = torch.as_tensor(value)
    return {k: v.detach().clone().contiguous() for k, v in tensors.items()}


def main(argv: list[str]) -> None:
    save_to = Path(argv[argv.index("--save-to") + 1]) if "--save-to" in argv else None
    pairs = [arg.split("=", 1) for arg in argv if "=" in arg]
    for i, (checkpoint, out) in enumerate(pairs):
        state, parallel = load(Path(checkpoint))
        tensors = whole_state(state)
        if parallel.is_main:
            save_file(tensors, out)
        if save_to is not None and i == 0:
            saver = fsdp.ShardedCheckpointer(
                save_to, parallel, keep_last=1, monitor="val/loss", mode="min", resumed_from=None
            )
            saver.save(state, reason="step")
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
