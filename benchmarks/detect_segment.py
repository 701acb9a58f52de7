"""Detection and segmentation on generated digit scenes: COCO mAP of CenterNet, mIoU of a U-Net.

Each recipe is trained once through the normal path (``ember.fit``, exactly what ``ember train
CONFIG`` does) and scored on its held-out test scenes: 2,000 scenes of 1-5 real MNIST digits on a
64x64 canvas, made only of digits that no training scene uses. Figures:

- ``configs/digit-detect.yaml`` (CenterNet): mAP@.5 (the issue's bar: >= 0.85) and mAP@[.5:.95],
  computed by pycocotools' COCOeval;
- ``configs/digit-segment.yaml`` (U-Net): mIoU over the 11 classes, background included (the bar:
  >= 0.75), and over the 10 digit classes alone.

Usage:
    python benchmarks/detect_segment.py                  # both recipes (tens of minutes on 2 cores)
    python benchmarks/detect_segment.py --only segment   # one of them
    python benchmarks/detect_segment.py --report RUN ... # print the table for finished runs instead
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import _common

RECIPES = {"detect": "configs/digit-detect.yaml", "segment": "configs/digit-segment.yaml"}
COLUMNS = {
    "detection": [("test/map50", "mAP@.5"), ("test/map", "mAP@[.5:.95]"), ("test/map75", "mAP@.75")],
    "segmentation": [
        ("test/miou", "mIoU (11 cl.)"),
        ("test/miou_fg", "mIoU digits"),
        ("test/pixel_accuracy", "pixel acc."),
    ],
}


def train(recipe: str, runs_dir: Path) -> str:
    """Train one recipe through ember.fit and print its wall and CPU time; returns the run id.

    CPU time (this process, all threads) is printed beside wall time because on a shared machine
    the wall time mostly measures the other tenants.
    """
    import ember

    wall, cpu = time.perf_counter(), time.process_time()
    result = ember.fit(_common.ROOT / RECIPES[recipe], runs_dir=runs_dir, progress=False)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(
        f"{recipe}: run {result.run_id}: train + val + test {wall / 60:.1f} min wall, {cpu / 60:.1f} min CPU",
        flush=True,
    )
    return result.run_id


def report(run_ids: list[str], runs_dir: Path) -> str:
    """A table of the test figures, training time and size of finished runs."""
    import yaml

    from ember.track import RunStore

    store = RunStore(runs_dir)
    rows = []
    for ref in run_ids:
        record = store.get(ref)
        config = yaml.safe_load(record.config)
        task = config["task"]["name"]
        last = {name: value for _, _, name, value in store.metrics(record.id)}
        figures = [f"{name} {last[key]:.3f}" for key, name in COLUMNS[task] if key in last]
        data = config["data"]
        rows.append(
            [
                record.id,
                f"{config['model']['name']} ({task})",
                f"{data['num_train']} x {config['trainer']['epochs']} ep",
                f"{(record.duration_s or 0) / 60:.1f} min",
                ", ".join(figures),
            ]
        )
    return _common.table(
        ["run", "model (task)", "train scenes x epochs", "train + val time", "test figures"], rows
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=sorted(RECIPES), help="train one recipe only")
    parser.add_argument("--runs-dir", type=Path, default=None, help="run store (default: a temporary folder)")
    parser.add_argument("--report", nargs="+", metavar="RUN", help="report finished runs, train nothing")
    args = parser.parse_args()
    print(_common.machine())
    if args.report:
        print(report(args.report, args.runs_dir or Path("runs")))
        return
    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="ember-bench-"))
    recipes = [args.only] if args.only else list(RECIPES)
    run_ids = [train(recipe, runs_dir) for recipe in recipes]
    print(report(run_ids, runs_dir))


if __name__ == "__main__":
    main()
