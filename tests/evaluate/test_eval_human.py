"""Human evaluation: agreement against references, the blinded sheet, and the export → rate → import round trip."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import cohen_kappa_score

from ember.evaluate.agreement import (
    category_counts,
    cohen_kappa,
    fleiss_kappa,
    krippendorff_alpha,
    pairwise_cohen,
)
from ember.evaluate.human import HumanItem, export_sheet, import_ratings

NAN = math.nan
# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", the 4 observers x 12 units example
KRIPPENDORFF_2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
    [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
]
# Fleiss' kappa worked example (Wikipedia, "Fleiss' kappa"): 10 subjects, 14 raters, 5 categories
FLEISS_EXAMPLE = [
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
]  # fmt: skip


def test_cohen_kappa_matches_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.integers(0, 4, 60)
        b = np.where(rng.random(60) < 0.6, a, rng.integers(0, 4, 60))
        for weights in (None, "linear", "quadratic"):
            assert cohen_kappa(a, b, weights=weights) == pytest.approx(
                cohen_kappa_score(a, b, weights=weights)
            )
    words_a, words_b = ["A", "B", "tie", "A", "A", "B"], ["A", "B", "A", "A", "tie", "B"]
    assert cohen_kappa(words_a, words_b) == pytest.approx(cohen_kappa_score(words_a, words_b))
    assert math.isnan(cohen_kappa(["A", "A"], ["A", "A"]))


def test_fleiss_kappa_worked_example() -> None:
    assert fleiss_kappa(FLEISS_EXAMPLE) == pytest.approx(0.20993, abs=1e-5)  # published: 0.210
    table, cats = category_counts([["a", "b", "a"], ["a", "b", "b"], ["a", None, "b"]])
    assert cats == ["a", "b"] and table.tolist() == [[3, 0], [0, 2], [1, 2]]
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa(table)


def test_krippendorff_alpha_published_values() -> None:
    published = {"nominal": 0.743, "ordinal": 0.815, "interval": 0.849, "ratio": 0.797}
    for level, value in published.items():
        assert krippendorff_alpha(KRIPPENDORFF_2011, level=level) == pytest.approx(value, abs=5e-4), level  # type: ignore[arg-type]
    binary = [[0, 1, 0, 0, 0, 0, 0, 0, 1, 0], [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]]  # same paper: 0.095
    assert krippendorff_alpha(binary) == pytest.approx(0.095, abs=5e-4)
    # two raters, no missing data, nominal: alpha is Scott's pi, close to Cohen's kappa
    assert krippendorff_alpha([["x", "y", None], ["x", "y", "y"]]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="numeric"):
        krippendorff_alpha([["a", "b"], ["a", "a"]], level="interval")


def test_agreement_against_reference_packages() -> None:
    krippendorff = pytest.importorskip("krippendorff")
    rng = np.random.default_rng(1)
    for _ in range(30):
        ratings = rng.integers(1, 5, size=(rng.integers(2, 6), 25)).astype(float)
        ratings[rng.random(ratings.shape) < 0.2] = np.nan
        for level in ("nominal", "ordinal", "interval", "ratio"):
            expected = krippendorff.alpha(reliability_data=ratings, level_of_measurement=level)
            assert krippendorff_alpha(ratings, level=level) == pytest.approx(expected)  # type: ignore[arg-type]


def test_fleiss_against_statsmodels() -> None:
    inter_rater = pytest.importorskip("statsmodels.stats.inter_rater")
    table = np.random.default_rng(2).multinomial(6, [0.5, 0.3, 0.2], size=40)
    assert fleiss_kappa(table) == pytest.approx(inter_rater.fleiss_kappa(table))


# --------------------------------------------------------------------------- the sheet


def _items(n: int = 30) -> list[HumanItem]:
    return [
        HumanItem(
            f"q{i}",
            input=f'Translate "{i}", please </script><b>bold</b>',
            outputs={"A": f"good answer {i}", "B": f"weak answer {i}"},
            reference=f"ref {i}",
        )
        for i in range(n)
    ]


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _truth(item: str) -> str:
    """The planted preference: A is better on items 0-19, B on 20-24, a tie on 25-29."""
    i = int(item[1:])
    return "A" if i < 20 else "B" if i < 25 else "tie"


def _fill(sheet: Path, out: Path, key: dict, rater: str, seed: int, flip: float = 0.15) -> dict[str, str]:  # type: ignore[type-arg]
    """A rater editing sheet.csv by hand: mostly the planted preference, sometimes another choice."""
    rng = np.random.default_rng(seed)
    chosen = {}
    rows = read_rows(sheet)
    for row in rows:
        entry = key["rows"][row["row"]]
        truth = _truth(entry["item"])
        choice = "tie" if truth == "tie" else "1" if entry["output_1"] == truth else "2"
        if rng.random() < flip:
            choice = str(rng.choice(["1", "2", "tie"]))
        row.update(rating=choice, rater=rater)
        chosen[row["row"]] = choice
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return chosen


def test_sheet_is_blinded_shuffled_and_offline(tmp_path: Path) -> None:
    sheet = export_sheet(_items(), tmp_path, systems={"A": "run-secret-a", "B": "run-secret-b"}, seed=3)
    text, page = sheet.sheet.read_text(), sheet.form.read_text()
    key = json.loads(sheet.key.read_text())
    assert "run-secret" not in text and "run-secret" not in page  # who is who lives in the key only
    assert key["systems"] == {"A": "run-secret-a", "B": "run-secret-b"}
    rows = read_rows(sheet.sheet)
    assert len(rows) == 30 and [r["item"] for r in rows] != [f"q{i}" for i in range(30)]
    sides = [key["rows"][r["row"]]["output_1"] for r in rows]
    assert 5 <= sides.count("A") <= 25  # each side shows A about half the time
    for r in rows:  # the key says truly which output is where
        entry = key["rows"][r["row"]]
        assert r[f"output_{1 if entry['output_1'] == 'A' else 2}"].startswith("good")
    assert all(r["reference"] == "" for r in rows)  # not shown unless asked
    assert "http://" not in page and "https://" not in page and "<link" not in page  # nothing fetched
    assert "</script><b>" not in page  # the markup in an input cannot close the data block


def test_pairwise_round_trip(tmp_path: Path) -> None:
    sheet = export_sheet(_items(), tmp_path / "sheet", systems={"A": "run-a", "B": "run-b"}, seed=1)
    key = json.loads(sheet.key.read_text())
    answers = {
        name: _fill(sheet.sheet, tmp_path / f"{name}.csv", key, name, seed)
        for seed, name in enumerate(["alice", "bob", "carol"])
    }
    result = import_ratings([tmp_path / f"{n}.csv" for n in answers], sheet.key, resamples=1000)
    # the same numbers by hand: unblind, score A's wins 1, ties 0.5
    winner = {
        (rater, row): ("tie" if c == "tie" else key["rows"][row][f"output_{c}"])
        for rater, chosen in answers.items()
        for row, c in chosen.items()
    }
    scores = [1.0 if w == "A" else 0.5 if w == "tie" else 0.0 for w in winner.values()]
    assert result.judgments == 90 and result.items == 30 and result.raters == ["alice", "bob", "carol"]
    a = result.win_rate["A"]
    assert a["estimate"] == pytest.approx(np.mean(scores))
    assert a["low"] < a["estimate"] < a["high"] and a["estimate"] > 0.6
    assert result.win_rate["B"]["estimate"] == pytest.approx(1 - a["estimate"])
    per_item: dict[str, list[float]] = {}
    for (_, row), s in zip(winner, scores):
        per_item.setdefault(key["rows"][row]["item"], []).append(s)
    means = [np.mean(v) for v in per_item.values()]
    wins, losses = sum(m > 0.5 for m in means), sum(m < 0.5 for m in means)
    assert result.win_rate["p_value"] == pytest.approx(binomtest(wins, wins + losses).pvalue)
    rows = sorted(key["rows"])
    matrix = [[winner[(r, row)] for row in rows] for r in ["alice", "bob", "carol"]]
    agreement = result.agreement
    assert agreement["krippendorff_alpha"]["value"] == pytest.approx(krippendorff_alpha(matrix))
    assert agreement["fleiss_kappa"]["value"] == pytest.approx(fleiss_kappa(category_counts(matrix)[0]))
    assert agreement["cohen_kappa"]["value"] == pytest.approx(pairwise_cohen(matrix)["mean"])
    assert 0.4 < agreement["fleiss_kappa"]["value"] < 0.95
    assert "win rate" in result.summary() and json.dumps(result.to_dict())


def test_likert_round_trip_with_missing_ratings(tmp_path: Path) -> None:
    sheet = export_sheet(_items(12), tmp_path, mode="likert", scale=5, seed=2)
    key = json.loads(sheet.key.read_text())
    rows = read_rows(sheet.sheet)
    assert len(rows) == 24 and {"output", "rating"} <= set(rows[0]) and "output_1" not in rows[0]
    for rater, offset in (("ann", 0), ("ben", 1)):
        filled = []
        for n, row in enumerate(rows):
            good = key["rows"][row["row"]]["system"] == "A"
            rating = "" if rater == "ben" and n < 4 else str(min(5, (4 if good else 2) + (n + offset) % 2))
            filled.append({**row, "rating": rating, "rater": rater if rating else ""})
        with open(tmp_path / f"{rater}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(filled)
    result = import_ratings([tmp_path / "ann.csv", tmp_path / "ben.csv"])  # the key beside them
    assert result.judgments == 44 and any("4 row(s) without a rating" in n for n in result.notes)
    assert result.likert is not None
    assert result.likert["A"]["mean"] > 4 > 2.5 > result.likert["B"]["mean"]
    assert result.likert["difference"]["mean"] > 1.5 and result.win_rate["A"]["estimate"] == 1.0
    assert result.agreement["krippendorff_alpha"]["level"] == "ordinal"
    assert result.agreement["fleiss_kappa"]["items"] == 20


def test_import_rejects_what_it_cannot_trust(tmp_path: Path) -> None:
    sheet = export_sheet(_items(4), tmp_path / "s")
    other = export_sheet(_items(4), tmp_path / "t")
    rows = read_rows(sheet.sheet)

    def write(name: str, **change: str) -> Path:
        path = tmp_path / name
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows([{**r, "rating": "1", "rater": "x", **change} for r in rows])
        return path

    with pytest.raises(ValueError, match="not the key's sheet"):
        import_ratings(write("a.csv"), other.key)
    with pytest.raises(ValueError, match="must be one of 1, 2, tie"):
        import_ratings(write("b.csv", rating="left"), sheet.key)
    with pytest.raises(FileNotFoundError, match="no key"):
        import_ratings(write("c.csv"))
    with pytest.raises(ValueError, match="pairwise rating needs two outputs"):
        export_sheet([HumanItem("x", outputs={"A": "1"})], tmp_path / "u")
    one = import_ratings(write("d.csv"), sheet.key)
    assert (
        one.agreement["cohen_kappa"]["value"] is None and "one rater" in one.agreement["cohen_kappa"]["note"]
    )


FORM_HARNESS = r"""
const fs = require("fs"), vm = require("vm");
const html = fs.readFileSync(process.argv[2], "utf8");
const blocks = [...html.matchAll(/<script([^>]*)>([\s\S]*?)<\/script>/g)];
const data = blocks.find(b => b[1].includes("application/json"))[2];
const code = blocks.find(b => !b[1].includes("application/json"))[2];
const context = {document: {getElementById: id => id === "sheet" ? {textContent: data} : null}};
vm.createContext(context);
vm.runInContext(code + "\nthis.emberSheet = emberSheet;", context);
process.stdout.write(context.emberSheet.toCSV(JSON.parse(process.argv[3]), process.argv[4]));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js to run the form's JavaScript")
def test_html_form_csv_round_trip(tmp_path: Path) -> None:
    """The form's own Download-CSV code (run under Node.js) writes a sheet import_ratings reads."""
    sheet = export_sheet(_items(10), tmp_path, systems={"A": "a", "B": "b"}, seed=4)
    key = json.loads(sheet.key.read_text())
    (tmp_path / "harness.js").write_text(FORM_HARNESS)
    expected = {}
    for rater in ("dana", "eve"):
        answers = {}
        for row, entry in key["rows"].items():
            if row == "r01" and rater == "eve":
                continue  # eve skipped one
            choice = "1" if entry["output_1"] == "A" else "2"
            answers[row] = {"rating": choice, "comment": 'fine, "really"'}
        csv_text = subprocess.run(
            ["node", str(tmp_path / "harness.js"), str(sheet.form), json.dumps(answers), rater],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout  # fmt: skip
        (tmp_path / f"{rater}.csv").write_text(csv_text, encoding="utf-8")
        expected[rater] = answers
    parsed = read_rows(tmp_path / "dana.csv")
    assert parsed[0]["comment"] == 'fine, "really"' and parsed[0]["input"].startswith('Translate "')
    result = import_ratings([tmp_path / "dana.csv", tmp_path / "eve.csv"], sheet.key)
    assert result.judgments == 19 and result.win_rate["A"]["estimate"] == 1.0
    assert (
        result.agreement["krippendorff_alpha"]["value"] is None
    )  # everyone agrees on one category: undefined
