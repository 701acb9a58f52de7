"""`ember eval` with intervals and baselines, `ember runs compare` with its p-values, `ember report`."""

import importlib.util
import re
from html.parser import HTMLParser
from pathlib import Path

import ember

CFG = "configs/digits-cnn.yaml"


class _Sections(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.images = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "section":
            self.ids.append(dict(attrs).get("id") or "")
        if tag == "img" and (dict(attrs).get("src") or "").startswith("data:image/png;base64,"):
            self.images += 1


def test_eval_compare_and_report(cli, tmp_path: Path, repo_root: Path) -> None:  # type: ignore[no-untyped-def]
    runs = str(tmp_path / "runs")
    tiny = {
        "model.name": "cnn_tiny",
        "trainer.epochs": 2,
    }  # trained in-process: `ember train` has its own e2e test
    run_a = ember.fit(repo_root / CFG, tiny, runs_dir=runs, progress=False).run_id
    run_b = ember.fit(repo_root / CFG, {**tiny, "trainer.seed": 1}, runs_dir=runs, progress=False).run_id

    out = cli("eval", run_a, "--resamples", "200", "--runs-dir", runs).stdout
    assert f"{run_a} · test split · 359 examples · 95% bootstrap intervals (200 resamples)" in out
    line = next(row for row in out.splitlines() if row.startswith("accuracy "))
    assert (
        len(re.findall(r"\d\.\d{4} \[\d\.\d{4}, \d\.\d{4}\]", line)) == 3
    )  # model, majority, logistic regression
    assert "margin on accuracy (model - baseline; higher is better), paired bootstrap:" in out
    assert re.search(r"  logistic regression +[+-]\d\.\d{4} \[[+-]\d\.\d{4}, [+-]\d\.\d{4}\]  p[=<]", out)

    compared = cli("runs", "compare", run_a, run_b, "--resamples", "200", "--runs-dir", runs).stdout
    assert "trainer.seed: 0 -> 1" in compared and "paired test on the test split (359 examples" in compared
    assert re.search(r"paired bootstrap p-value on accuracy: [0-9.e-]+", compared)
    assert re.search(
        r"McNemar \((exact binomial|chi-square, continuity-corrected)\): .* \(p-value [0-9.e-]+\)", compared
    )
    assert "verdict: " in compared and ("significant" in compared or "cannot tell" in compared)

    page = tmp_path / "report.html"
    printed = cli("report", run_b, "--out", str(page), "--resamples", "200", "--runs-dir", runs).stdout
    assert printed.startswith(f"report {page}")
    sections = _Sections()
    sections.feed(page.read_text())
    assert sections.ids == [
        "summary", "metrics", "baselines", "curves", "learning-rate", "confusion", "calibration", "per-class",
        "mistakes", "samples", "checks", "facts",
    ]  # fmt: skip
    assert sections.images >= 8
    checks = re.search(r'<section id="checks">(.*?)</section>', page.read_text(), re.S)
    assert checks is not None
    if importlib.util.find_spec("ember.evaluate.checks") is not None:  # the real checks ran on the run
        assert "checks unavailable" not in checks.group(1) and "failed to run" not in checks.group(1)
        assert "<table>" in checks.group(1) or "every check passed" in checks.group(1)
