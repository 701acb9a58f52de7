"""``ember eval``: a finished run's metrics on one of its splits, with intervals, beside baselines."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ember.cli._format import fmt, table

HELP = """Rebuild a run's data (the same saved splits; a run trained from Python reads the splits it kept)
and final model, and print its metrics on one split, or on given arrays: each with a bootstrap
confidence interval, beside a trivial and a classical baseline fitted on the run's training split and
scored on the same examples, and the model's margin over each baseline with its interval and
paired-bootstrap p-value.

what is resampled, and the baselines, by task (each task's own answer):
  classification   examples; majority class, logistic regression
  regression       examples; training mean, gradient boosting
  language_model   blocks of text (the split's chunks); add-alpha unigram and bigram
  seq2seq          sentence pairs (BLEU, chrF); copy, word by word
  detection        images (COCO mAP); class-prior boxes, connected components + logistic regression
  segmentation     images (mIoU); all background, threshold + components + logistic regression

examples:
  ember eval latest --split test
  ember eval digits-cnn-2026 --split val --json
  ember eval latest --resamples 5000 --no-baselines
  ember eval RUN --data new.npz          # arrays x (inputs) and y (targets) of the run's shapes
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a finished run on its train/val/test split, with intervals and baselines",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", help="run id, unique prefix, or 'latest'")
    p.add_argument(
        "--split", default="test", choices=["train", "val", "test"], help="which split (default test)"
    )
    p.add_argument(
        "--data", metavar="NPZ", help="evaluate on these arrays instead of a split (.npz with 'x' and 'y')"
    )
    p.add_argument("--runs-dir", metavar="DIR", help="the run store (default $EMBER_RUNS or ./runs)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--confidence", type=float, default=0.95, help="interval coverage (default 0.95)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--no-baselines", action="store_true", help="skip fitting the baselines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ember.evaluate import run_predictions, scorecard
    from ember.track import RunStore

    predictions = run_predictions(args.run, args.split, runs_dir=args.runs_dir, data=args.data)
    card = scorecard(
        predictions,
        baselines=not args.no_baselines,
        n_resamples=args.resamples,
        confidence=args.confidence,
        seed=args.seed,
    )
    if args.data is None:  # figures on a split are the run's; on outside arrays they are not logged
        log = RunStore(args.runs_dir).open(card.run_id)
        log.log({f"eval/{args.split}/{k}": v for k, v in card.metrics.items()}, step=0)
        log.flush()
    print(json.dumps(card.to_dict(), indent=2) if args.json else render(card))
    return 0


def render(card: Any) -> str:
    """The scorecard as one screen of text."""
    from ember.evaluate.scorecard import fmt_p

    level = f"{card.confidence:.0%}"
    how = f"{level} bootstrap intervals ({card.n_resamples} resamples)" if card.intervals else "no intervals"
    lines = [f"{card.run_id} · {card.split} split · {card.n} {card.unit} · {how}", ""]
    names = list(card.intervals) or [k for k in card.metrics if "/" not in k and k != "loss"]
    rows = []
    for name in names:
        model = str(card.intervals[name]) if name in card.intervals else fmt(card.metrics.get(name))
        rows.append([name, model, *[_cell(b.intervals.get(name)) for b in card.baselines]])
    if "loss" in card.metrics and "loss" not in card.intervals:
        rows.append(["loss", fmt(card.metrics["loss"]), *["-" for _ in card.baselines]])
    lines.append(table(["metric", "model", *[b.name for b in card.baselines]], rows))
    margins = [b for b in card.baselines if b.margin is not None]
    if margins:
        better = "higher" if card.mode == "max" else "lower"
        lines += ["", f"margin on {card.headline} (model - baseline; {better} is better), paired bootstrap:"]
        width = max(len(b.name) for b in margins)
        for b in margins:
            d = b.margin.difference
            verdict = "significant" if b.margin.significant else "not significant"
            lines.append(
                f"  {b.name.ljust(width)}  {d.value:+.4f} [{d.low:+.4f}, {d.high:+.4f}]  "
                f"{fmt_p(b.margin.p_value)}  {verdict}"
            )
    if card.baselines:
        lines += ["", "baselines (fitted on the training split):"]
        lines += [f"  {b.name}: {b.description}" for b in card.baselines]
    lines += [f"note: {n}" for n in card.notes]
    return "\n".join(lines)


def _cell(ci: Any) -> str:
    return "-" if ci is None else str(ci)
