"""CLI paths: `ember check RUN`, `ember check shift`, and `ember human export` → rate → `ember human import`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

import ember
from ember.cli import main
from ember.data import load_dataset

RECIPE = str(Path(__file__).resolve().parents[2] / "configs" / "digits-cnn.yaml")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, Path]:
    runs = tmp_path_factory.mktemp("cli-check") / "runs"
    base = {"trainer.epochs": 2, "model.name": "cnn_tiny"}
    a = ember.fit(RECIPE, base, runs_dir=runs, progress=False)
    b = ember.fit(
        RECIPE,
        {**base, "trainer.seed": 1, "trainer.epochs": 1},
        runs_dir=runs,
        progress=False,
    )
    return a.run_id, b.run_id, runs


def test_check_run_prints_findings(
    cli, two_runs: tuple[str, str, Path], capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    run_a, _, runs = two_runs
    out = cli("check", run_a, "--runs-dir", str(runs), "--json", "--fail-on", "error").stdout
    findings = {f["name"]: f for f in json.loads(out)}
    assert {"overfitting.curve", "overfitting.gap", "leakage.duplicates:train/test", "leakage.feature",
            "shift", "imbalance"} <= set(findings)  # fmt: skip
    assert all(f["severity"] in ("info", "warning", "error") and f["evidence"] for f in findings.values())
    assert findings["leakage.duplicates:train/test"]["evidence"]["exact_pairs"] == 0
    assert main(["check", run_a[:-2], "--runs-dir", str(runs), "--checks", "imbalance,leakage"]) == 0
    text = capsys.readouterr().out
    assert "INFO     imbalance:" in text and "evidence: counts=" in text and "0 errors" in text


def test_check_shift_between_files(cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    bundle = load_dataset("digits")
    # digits are stored writer by writer, so consecutive blocks differ for real: draw at random
    order = np.random.default_rng(0).permutation(len(bundle.train))
    x, y = bundle.train.x.numpy()[order], bundle.train.y.numpy()[order]
    np.savez(tmp_path / "ref.npz", x=x[:300], y=y[:300])
    np.savez(tmp_path / "same.npz", x=x[300:450], y=y[300:450])
    np.savez(tmp_path / "dark.npz", x=x[300:450] * 0.8)
    same = main(["check", "shift", "--reference", str(tmp_path / "ref.npz"), "--current", str(tmp_path / "same.npz"),
                 "--fail-on", "warning", "--permutations", "200"])  # fmt: skip
    text = capsys.readouterr().out
    assert same == 0 and "no distribution shift detected" in text and "labels p=" in text
    dark = cli("check", "shift", "--reference", str(tmp_path / "ref.npz"), "--current", str(tmp_path / "dark.npz"),
               "--fail-on", "warning", "--json", check=False)  # fmt: skip
    assert dark.returncode == 1
    (finding,) = json.loads(dark.stdout)
    assert finding["severity"] == "warning" and finding["evidence"]["shifted"] is True
    assert set(finding["evidence"]["tests"]) == {"ks", "mmd", "classifier"}  # no labels in dark.npz


def test_check_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "shift", "--reference", "a.npz"]) == 2
    assert "needs --reference A.npz and --current B.npz" in capsys.readouterr().err
    np.savez(tmp_path / "no_x.npz", images=np.zeros((3, 2)))
    assert (
        main(
            [
                "check",
                "shift",
                "--reference",
                str(tmp_path / "no_x.npz"),
                "--current",
                str(tmp_path / "no_x.npz"),
            ]
        )
        == 2
    )
    assert "has no array 'x'" in capsys.readouterr().err
    assert main(["check", "nope", "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "no run 'nope'" in capsys.readouterr().err


def test_human_export_rate_import(
    cli, two_runs: tuple[str, str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    run_a, run_b, runs = two_runs
    out = tmp_path / "eval"
    printed = cli("human", "export", run_a, "--pairwise", run_b, "--n", "20", "--out", str(out),
                  "--runs-dir", str(runs)).stdout  # fmt: skip
    assert "20 rows to rate" in printed and "ember human import" in printed
    key = json.loads((out / "key.json").read_text())
    assert key["systems"] == {"A": run_a, "B": run_b} and key["meta"]["split"] == "test"
    page = (out / "form.html").read_text()
    assert "data:image/png;base64," in page and run_a not in page  # the digit itself, no run ids
    with open(out / "sheet.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 20 and all(r["item"].startswith("test:") and "%" in r["output_1"] for r in rows)
    # two raters: both prefer whichever output names the true digit (run A trained longer)
    truth = load_dataset("digits")  # the test split of the run: digits rows by the saved indices
    test_index = np.load(runs / run_a / "splits" / "test.npy")
    for rater in ("ann", "ben"):
        with open(out / f"{rater}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            for n, r in enumerate(rows):
                label = str(int(truth.train.y[test_index[int(r["item"].split(":")[1])]]))
                one, two = (r[f"output_{k}"].split()[0] == label for k in (1, 2))
                choice = "tie" if one == two else "1" if one else "2"
                if rater == "ben" and n % 7 == 0:
                    choice = "tie"
                writer.writerow({**r, "rating": choice, "rater": rater})
    report = json.loads(cli("human", "import", str(out / "ann.csv"), str(out / "ben.csv"), "--json").stdout)
    assert report["judgments"] == 40 and report["raters"] == ["ann", "ben"]
    win = report["win_rate"]["A"]
    assert 0 <= win["low"] <= win["estimate"] <= win["high"] <= 1
    assert set(report["agreement"]) == {"cohen_kappa", "fleiss_kappa", "krippendorff_alpha"}
    assert main(["human", "import", str(out / "ann.csv"), "--key", str(out / "key.json")]) == 0
    text = capsys.readouterr().out
    assert "win rate" in text and "one rater" in text


def test_human_export_needs_a_mode_and_keeps_keys(two_runs: tuple[str, str, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    run_a, _, runs = two_runs
    assert main(["human", "export", run_a, "--runs-dir", str(runs), "--out", str(tmp_path)]) == 2
    assert "--pairwise RUN_B" in capsys.readouterr().err
    (tmp_path / "key.json").write_text("{}")
    assert main(["human", "export", run_a, "--likert", "--runs-dir", str(runs), "--out", str(tmp_path)]) == 2
    assert "would lose its key" in capsys.readouterr().err
    assert main(["human", "export", run_a, "--likert", "--n", "5", "--runs-dir", str(runs), "--out",
                 str(tmp_path), "--force"]) == 0  # fmt: skip
    assert json.loads((tmp_path / "key.json").read_text())["mode"] == "likert"
