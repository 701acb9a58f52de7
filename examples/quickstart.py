"""Quickstart: train a small CNN on the bundled 8x8 digits with the Python API, then test it.

    python examples/quickstart.py            # 30 epochs, ~98% test accuracy
    python examples/quickstart.py --fast     # a tiny model for one epoch: a few seconds

The run (config, checkpoints, metrics, final weights) lands in the run store:
``runs/`` or ``$EMBER_RUNS``; ``ember runs`` lists it.
"""

from __future__ import annotations

import argparse

import ember
from ember.data import load_dataset, split_indices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="tiny model, one epoch (a smoke test)")
    args = parser.parse_args()

    # 1,797 digits as float32 (N, 1, 8, 8) in [0, 1]; a seeded, stratified train/val/test split
    pool = load_dataset("digits").train
    parts = split_indices(
        pool.y.numpy(), len(pool), val_fraction=0.1, test_fraction=0.2, seed=0, stratified=True
    )
    train, val, test = (pool.subset(parts[name]) for name in ("train", "val", "test"))

    model = ember.models.create("cnn_tiny" if args.fast else "cnn", in_channels=1, image_size=8)
    trainer = ember.Trainer(
        model,
        task="classification",
        optimizer="adamw",
        lr=3e-3,
        weight_decay=0.05,
        schedule="cosine",
        warmup=0.05,
        epochs=1 if args.fast else 30,
        batch_size=64,
        seed=0,
    )
    result = trainer.fit(train, val)  # a Dataset, a DataLoader or (X, y) tensors work too
    metrics = trainer.test(test)
    print(f"val accuracy {result.metrics['val/accuracy']:.4f} after {result.steps} steps")
    print(f"test accuracy {metrics['accuracy']:.4f}")
    print(f"run {result.run_id} {result.run_dir}")


if __name__ == "__main__":
    main()
