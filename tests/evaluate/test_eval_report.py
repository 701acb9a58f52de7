"""Run predictions, scorecards, paired comparisons and the HTML report on real (tiny) runs."""

from __future__ import annotations

import base64
import json
import struct
import sys
import types
from dataclasses import dataclass, field
from html.parser import HTMLParser
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import ember
from ember.evaluate import comparable, compare, run_predictions, scorecard, write_report
from ember.evaluate.report import SECTIONS, render

DIGITS = "configs/digits-cnn.yaml"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, repo_root_module: Path) -> dict[str, Any]:
    """Three tiny digits runs (A; B with another seed; C on another split) and a regression run."""
    folder = tmp_path_factory.mktemp("eval-runs")
    cfg = str(repo_root_module / DIGITS)
    base = {"model.name": "cnn_tiny", "trainer.log_every": 5}
    a = ember.fit(cfg, {**base, "trainer.epochs": 2}, runs_dir=folder, progress=False)
    b = ember.fit(cfg, {**base, "trainer.epochs": 2, "trainer.seed": 1}, runs_dir=folder, progress=False)
    c = ember.fit(cfg, {**base, "trainer.epochs": 1, "data.split_seed": 1}, runs_dir=folder, progress=False)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.3 * rng.normal(size=300)).astype(np.float32)
    np.savez(folder / "table.npz", x=x, y=y)
    r = ember.fit(
        {"data": {"name": "npz", "path": str(folder / "table.npz"), "split": "random", "batch_size": 32},
         "model": {"name": "mlp_tiny"}, "task": {"name": "regression"}, "optim": {"lr": 0.01},
         "trainer": {"epochs": 3}},
        runs_dir=folder, progress=False,
    )  # fmt: skip
    return {"dir": folder, "a": a, "b": b, "c": c, "r": r}


@pytest.fixture(scope="module")
def repo_root_module() -> Path:
    return Path(__file__).resolve().parents[2]


def test_predictions_reproduce_the_test_metrics_training_logged(runs: dict[str, Any]) -> None:
    a = runs["a"]
    p = run_predictions(a.run_id, "test", runs_dir=runs["dir"])
    assert p.outputs.shape == (len(p.targets), 10) and p.task_name == "classification"
    assert p.metrics["accuracy"] == pytest.approx(a.metrics["test/accuracy"], abs=1e-6)
    assert p.metrics["loss"] == pytest.approx(a.metrics["test/loss"], rel=1e-5)
    with pytest.raises(ValueError, match="no 'train' split|it has"):
        run_predictions(a.run_id, "nope", runs_dir=runs["dir"])


def test_scorecard_intervals_baselines_and_margins(runs: dict[str, Any]) -> None:
    p = run_predictions(runs["a"].run_id, "test", runs_dir=runs["dir"])
    card = scorecard(p, n_resamples=300)
    acc = card.intervals["accuracy"]
    assert acc.value == pytest.approx(p.metrics["accuracy"], abs=1e-6) and acc.low <= acc.value <= acc.high
    assert {"f1_macro", "precision_macro", "recall_macro", "ece", "auroc", "top5_accuracy"} <= set(
        card.intervals
    )
    majority, logistic = card.baselines
    assert majority.intervals["accuracy"].value == pytest.approx(
        float((p.targets == 1).float().mean()), abs=0.05
    )
    assert logistic.intervals["accuracy"].value > 0.85  # a strong classical baseline on 8x8 digits
    for b in card.baselines:
        assert b.margin is not None
        assert b.margin.difference.value == pytest.approx(acc.value - b.intervals["accuracy"].value)
        assert b.margin.difference.low <= b.margin.difference.value <= b.margin.difference.high
    assert majority.margin is not None and majority.margin.significant  # far better than always one class
    data = json.loads(json.dumps(card.to_dict()))
    assert data["accuracy"] == p.metrics["accuracy"] and data["intervals"]["accuracy"]["low"] == acc.low
    assert data["baselines"][1]["margin"]["metric"] == "accuracy"


def test_regression_scorecard(runs: dict[str, Any]) -> None:
    p = run_predictions(runs["r"].run_id, "test", runs_dir=runs["dir"])
    card = scorecard(p, n_resamples=200)
    assert card.headline == "mse" and card.mode == "min"
    assert card.intervals["mse"].value == pytest.approx(p.metrics["mse"], rel=1e-5)
    assert card.intervals["r2"].value == pytest.approx(p.metrics["r2"], abs=1e-5)
    assert [b.name for b in card.baselines] == ["mean", "gradient boosting"]
    assert card.baselines[0].intervals["r2"].value < 0.05  # the mean explains nothing


def test_compare_pairs_the_same_examples(runs: dict[str, Any]) -> None:
    pa = run_predictions(runs["a"].run_id, "test", runs_dir=runs["dir"])
    pb = run_predictions(runs["b"].run_id, "test", runs_dir=runs["dir"])
    result = compare(pa, pb, n_resamples=300)
    test = result.tests["accuracy"]
    assert test.difference.value == pytest.approx(pb.metrics["accuracy"] - pa.metrics["accuracy"], abs=1e-6)
    assert 0 < test.p_value <= 1 and result.mcnemar is not None
    right_a, right_b = pa.outputs.argmax(1) == pa.targets, pb.outputs.argmax(1) == pb.targets
    assert result.mcnemar.b == int((right_a & ~right_b).sum()) and result.mcnemar.c == int(
        (~right_a & right_b).sum()
    )
    assert "p=" in result.verdict or "p<" in result.verdict
    pc = run_predictions(runs["c"].run_id, "test", runs_dir=runs["dir"])
    reason = comparable(pa, pc)
    assert reason is not None and "different data or splits" in reason
    with pytest.raises(ValueError, match="cannot pair"):
        compare(pa, pc)


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, list[str]] = {}
        self.images: list[tuple[str, str]] = []  # (section, src)
        self.current = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self.current = a.get("id") or ""
            self.sections[self.current] = []
        elif tag == "img":
            self.images.append((self.current, a.get("src") or ""))

    def handle_data(self, data: str) -> None:
        if self.current and data.strip():
            self.sections[self.current].append(data.strip())


def _check_png(src: str) -> tuple[int, int]:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    raw = base64.b64decode(src[len(prefix) :], validate=True)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR" and len(raw) > 5000
    width, height = struct.unpack(">II", raw[16:24])
    image = Image.open(BytesIO(raw))
    image.verify()
    assert image.size == (width, height) and width >= 300 and height >= 150
    pixels = np.asarray(Image.open(BytesIO(raw)).convert("L"))
    assert pixels.std() > 5  # drawn on, not a blank canvas
    return width, height


def _parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    return parser


def test_report_has_every_section_and_valid_embedded_plots(
    runs: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = types.ModuleType("ember.evaluate.checks")  # the real checks run in tests/e2e/test_cli_report.py
    fake.run_checks = lambda ref, runs_dir=None: [_Finding("overfitting", "info", "no sign of overfitting")]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ember.evaluate.checks", fake)
    path = write_report(runs["a"].run_id, tmp_path / "r.html", runs_dir=runs["dir"], n_resamples=200)
    page = path.read_text()
    assert (
        page.startswith("<!DOCTYPE html>") and "http://" not in page and "https://" not in page
    )  # self-contained
    parsed = _parse(page)
    assert list(parsed.sections) == [key for key, _ in SECTIONS]
    titles = dict(SECTIONS)
    for key, texts in parsed.sections.items():
        assert texts[0] == titles[key] and len(" ".join(texts[1:])) > 20, key  # a title, then content
    images_by_section: dict[str, int] = {}
    for section, src in parsed.images:
        _check_png(src)
        images_by_section[section] = images_by_section.get(section, 0) + 1
    for key in ("baselines", "curves", "learning-rate", "confusion", "calibration", "per-class", "mistakes"):
        assert images_by_section.get(key, 0) >= 1, key
    assert images_by_section["curves"] == 2  # loss, and validation metrics
    text = {k: " ".join(v) for k, v in parsed.sections.items()}
    assert "accuracy" in text["metrics"] and "logistic regression" in text["metrics"]
    assert "margin" in text["baselines"] and "p" in text["baselines"]
    assert "ECE" in text["calibration"] and "support" in text["per-class"]
    assert "most confident" in text["mistakes"]
    assert runs["a"].run_id in text["facts"] and "data sha256" in text["facts"] and "torch" in text["facts"]


@dataclass
class _Finding:
    name: str
    severity: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)


def test_checks_section_uses_the_checks_module_when_there(
    runs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    p = run_predictions(runs["r"].run_id, "test", runs_dir=runs["dir"])
    fake = types.ModuleType("ember.evaluate.checks")
    seen: list[str] = []

    def run_checks(ref: str, *, runs_dir: Any = None) -> list[_Finding]:
        seen.append(ref)
        return [
            _Finding(
                "leakage",
                "warning",
                "3 test rows duplicate training rows",
                {"rows": [1, 2, 3], "share": 0.01},
            )
        ]

    fake.run_checks = run_checks  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ember.evaluate.checks", fake)
    page = render(p, runs_dir=runs["dir"], n_resamples=100)
    checks = " ".join(_parse(page).sections["checks"])
    assert seen == [p.record.id] and "3 test rows duplicate training rows" in checks and "warning" in checks
    monkeypatch.setitem(sys.modules, "ember.evaluate.checks", None)  # import now raises ImportError
    page = render(p, runs_dir=runs["dir"], n_resamples=100)
    assert "checks unavailable" in " ".join(_parse(page).sections["checks"])
    parsed = _parse(page)  # regression: the classification-only sections say so, the residual plot is there
    assert "not applicable" in " ".join(parsed.sections["calibration"])
    assert any(section == "confusion" for section, _ in parsed.images)
    for _, src in parsed.images:
        _check_png(src)


def test_cli_eval_json_and_compare_refusal_in_process(
    runs: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from ember.cli import main
    from ember.track import RunStore

    folder = str(runs["dir"])
    a, c = runs["a"].run_id, runs["c"].run_id
    assert main(["eval", a, "--json", "--resamples", "100", "--runs-dir", folder]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["run"] == a and data["n"] == 359 and data["headline"] == "accuracy"
    assert data["accuracy"] == pytest.approx(
        runs["a"].metrics["test/accuracy"], abs=1e-6
    )  # as before: flat metrics
    ci = data["intervals"]["accuracy"]
    assert ci["low"] <= data["accuracy"] <= ci["high"]
    assert [b["name"] for b in data["baselines"]] == ["majority", "logistic regression"]
    assert 0 < data["baselines"][0]["margin"]["p_value"] <= 1
    logged = {name for _, _, name, _ in RunStore(folder).metrics(a)}
    assert "eval/test/accuracy" in logged
    assert main(["runs", "compare", a, c, "--resamples", "100", "--runs-dir", folder]) == 0
    out = capsys.readouterr().out
    assert "paired test skipped: the runs used different data or splits" in out and "split_seed" in out
