"""How wide a language model's loss interval is when the bootstrap resamples blocks, windows or tokens.

``ember eval`` resamples whole blocks (the split's chunks) because neighbouring tokens' losses are
correlated (see ``ember.metrics.lm``). This prints, for one finished language-model
run, the 95% interval of its test loss from the same number of resamples over three units: blocks
(what ``ember eval`` does), windows taken as independent, and tokens taken as independent, with
each width as a ratio of the block interval's. One evaluation pass gives all three.

Usage:
    python benchmarks/lm_bootstrap_units.py RUN [--runs-dir DIR] [--split test] [--resamples 1000]
"""

from __future__ import annotations

import argparse

import _common
import numpy as np
import torch
import torch.nn.functional as F

from ember.evaluate import bootstrap, run_predictions
from ember.metrics.lm import lm_statistics
from ember.tasks import contract


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run")
    parser.add_argument("--runs-dir")
    parser.add_argument("--split", default="test")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    _common.set_threads(args.threads)
    p = run_predictions(args.run, args.split, runs_dir=args.runs_dir)
    windows = getattr(p.evaluation, "windows", None)
    if windows is None:
        raise SystemExit(f"run {p.record.id} is a {p.task_name} run, not a language model")
    blocks = contract.evidence(p.task, p.evaluation, p.data, n_resamples=args.resamples)
    per = windows()
    model = p.run.model.eval()
    losses = []
    with torch.inference_mode():  # per-token losses of the very windows `ember eval` scores
        for x, y in p.data:
            out = model(x).float().flatten(0, 1)
            losses.append(F.cross_entropy(out, y.flatten(), reduction="none").double().numpy())
    tokens = np.concatenate(losses)
    units = {
        "blocks": (blocks.statistics, blocks.n),
        "windows": (lm_statistics(per[:, 0], per[:, 1]), len(per)),
        "tokens": (lm_statistics(tokens, np.ones(len(tokens))), len(tokens)),
    }
    intervals = {k: bootstrap(s, n, n_resamples=args.resamples)["loss"] for k, (s, n) in units.items()}
    width = {k: ci.high - ci.low for k, ci in intervals.items()}
    print(_common.machine())
    rows = [
        [k, f"{units[k][1]:,}", str(ci), f"{width[k]:.4f}", f"{width['blocks'] / width[k]:.2f}x"]
        for k, ci in intervals.items()
    ]
    print(_common.table(["unit", "n", "loss [95% interval]", "width", "block width / width"], rows))


if __name__ == "__main__":
    main()
