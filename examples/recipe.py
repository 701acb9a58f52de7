"""A recipe from a config file: ``ember.fit`` builds data, splits, model and trainer, then records the run.

    python examples/recipe.py                 # configs/digits-cnn.yaml as written (~98% test accuracy)
    python examples/recipe.py --fast          # a tiny model for one epoch: a few seconds

Overrides use the config's dotted keys, exactly as after ``ember train CONFIG``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import ember

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "digits-cnn.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="tiny model, one epoch (a smoke test)")
    args = parser.parse_args()

    overrides = {"model.name": "cnn_tiny", "trainer.epochs": 1} if args.fast else {}
    result = ember.fit(CONFIG, overrides=overrides)
    print(f"{result.steps} steps in {result.seconds:.1f}s; best val/accuracy {result.best:.4f}")
    print(f"test accuracy {result.metrics['test/accuracy']:.4f}")
    print(f"run {result.run_id} {result.run_dir}")


if __name__ == "__main__":
    main()
