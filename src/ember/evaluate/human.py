"""Human evaluation: a blinded rating sheet out (CSV + an offline HTML form), win rates and agreement in.

**Export.** :func:`export_sheet` writes three files for a list of :class:`HumanItem` (an input and
each system's output as text, so classifier predictions and generated text fit alike):

- ``sheet.csv``: one row per judgment to make, rows shuffled; raters fill ``rating`` and ``rater``;
- ``form.html``: the same rows as a static page (inline JS and CSS, nothing fetched) whose
  *Download CSV* button saves the filled sheet in the same columns;
- ``key.json``: which system is behind each row. It stays with whoever runs the study.

Pairwise (A/B) sheets show the two outputs as "1" and "2" in a random order per item; Likert sheets
put every (item, system) output on its own row, so raters never see which system wrote what.

**Import.** :func:`import_ratings` unblinds the filled sheets with the key and computes win rates
(ties count half) with bootstrap confidence intervals over items, a sign test, Likert means, and
agreement between raters: Cohen's kappa (mean over rater pairs), Fleiss' kappa (items every rater
rated) and Krippendorff's alpha (:mod:`ember.evaluate.agreement`).

Example:
    >>> import tempfile
    >>> items = [HumanItem(f"q{i}", input=f"2 + {i} = ?", outputs={"A": str(2 + i), "B": "5"}) for i in range(6)]
    >>> sheet = export_sheet(items, tempfile.mkdtemp(), systems={"A": "model a", "B": "model b"})
    >>> sorted(p.name for p in sheet.folder.iterdir())
    ['form.html', 'key.json', 'sheet.csv']
"""

from __future__ import annotations

import csv
import json
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ember.evaluate.agreement import rating_agreement
from ember.evaluate.human_form import form_html

Mode = Literal["pairwise", "likert"]
PAIRWISE_CHOICES = ("1", "2", "tie")


@dataclass
class HumanItem:
    """One thing to rate: an input and the output of each system, as text.

    Args:
        item_id: a stable id (e.g. ``test:123``); it must not reveal which system is which.
        input: the input as text (a prompt, a description, feature values); may be empty.
        outputs: system label → its output text, e.g. ``{"A": "7 (93%)", "B": "1 (51%)"}``.
        image: an image of the input as a ``data:image/png;base64,...`` URI, or None.
        reference: the expected output, shown to raters only when the sheet asks for it.
    """

    item_id: str
    input: str = ""
    outputs: dict[str, str] = field(default_factory=dict)
    image: str | None = None
    reference: str | None = None


@dataclass
class ExportedSheet:
    """Where :func:`export_sheet` wrote the sheet, the form and the key."""

    folder: Path
    sheet: Path
    form: Path
    key: Path
    sheet_id: str
    rows: int


def export_sheet(
    items: Sequence[HumanItem],
    out_dir: str | Path,
    *,
    mode: Mode = "pairwise",
    systems: dict[str, str] | None = None,
    n: int | None = None,
    scale: int = 5,
    seed: int = 0,
    show_reference: bool = False,
    title: str = "ember human evaluation",
    question: str = "",
    meta: dict[str, Any] | None = None,
) -> ExportedSheet:
    """Write a blinded, shuffled rating sheet (CSV), its HTML form and the unblinding key.

    Args:
        items: what to rate; pairwise needs exactly two systems in every item's ``outputs``.
        out_dir: the folder for ``sheet.csv``, ``form.html`` and ``key.json`` (created).
        mode: ``pairwise`` (which of two outputs is better, or a tie) or ``likert`` (rate each
            output from 1 to ``scale``).
        systems: system label → description (a run id ...), kept in the key only.
        n: rate a seeded random sample of this many items (default all).
        scale: points of the Likert scale.
        seed: seeds the sample, the row order and the left/right order.
        show_reference: show each item's reference output to raters.
        title / question: the heading and the instruction raters read.
        meta: anything else to keep in the key (split, indices ...).

    Returns:
        :class:`ExportedSheet` with the three paths.
    """
    if mode not in ("pairwise", "likert"):
        raise ValueError(f"mode must be 'pairwise' or 'likert', got {mode!r}")
    if not items:
        raise ValueError("no items to rate")
    labels = sorted({s for item in items for s in item.outputs})
    if mode == "pairwise" and (len(labels) != 2 or any(len(i.outputs) != 2 for i in items)):
        raise ValueError(
            f"pairwise rating needs two outputs per item from the same two systems; got {labels}"
        )
    if len({i.item_id for i in items}) != len(items):
        raise ValueError("item ids must be unique")
    if scale < 2:
        raise ValueError(f"a Likert scale needs at least 2 points, got {scale}")
    rng = np.random.default_rng(seed)
    chosen = list(items)
    if n is not None and n < len(chosen):
        chosen = [chosen[i] for i in sorted(rng.choice(len(chosen), n, replace=False))]
    sheet_id = secrets.token_hex(6)
    rows: list[dict[str, str]] = []
    key_rows: dict[str, dict[str, str]] = {}
    units: list[tuple[HumanItem, list[str]]] = []
    if mode == "pairwise":
        units = [(item, list(rng.permutation(labels))) for item in chosen]
    else:
        units = [(item, [label]) for item in chosen for label in labels if label in item.outputs]
    order = rng.permutation(len(units))
    width = len(str(len(units)))
    for position, u in enumerate(order, start=1):
        item, shown = units[u]
        row_id = f"r{position:0{width}d}"
        row = {"sheet": sheet_id, "row": row_id, "item": item.item_id, "input": item.input}
        row["reference"] = (item.reference or "") if show_reference else ""
        if mode == "pairwise":
            row.update(output_1=item.outputs[shown[0]], output_2=item.outputs[shown[1]])
            key_rows[row_id] = {"item": item.item_id, "output_1": shown[0], "output_2": shown[1]}
        else:
            row["output"] = item.outputs[shown[0]]
            key_rows[row_id] = {"item": item.item_id, "system": shown[0]}
        row.update(rating="", rater="", comment="")
        rows.append(row)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    columns = list(rows[0])
    with open(folder / "sheet.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    images = {item.item_id: item.image for item in chosen if item.image}
    if not question:
        question = (
            "Which output is better? Choose 1, 2, or tie."
            if mode == "pairwise"
            else f"Rate each output from 1 (poor) to {scale} (excellent)."
        )
    page = {
        "sheet": sheet_id,
        "mode": mode,
        "scale": scale,
        "title": title,
        "question": question,
        "columns": columns,
        "rows": rows,
        "images": images,
    }
    (folder / "form.html").write_text(form_html(page), encoding="utf-8")
    key = {
        "sheet": sheet_id,
        "mode": mode,
        "scale": scale,
        "systems": {label: (systems or {}).get(label, label) for label in labels},
        "seed": seed,
        "rows": key_rows,
        "meta": meta or {},
    }
    (folder / "key.json").write_text(json.dumps(key, indent=1), encoding="utf-8")
    return ExportedSheet(
        folder, folder / "sheet.csv", folder / "form.html", folder / "key.json", sheet_id, len(rows)
    )


# --------------------------------------------------------------------------- runs as items


def export_runs(
    run_a: str,
    run_b: str | None,
    out_dir: str | Path,
    *,
    mode: Mode = "pairwise",
    n: int | None = 50,
    split: str = "test",
    seed: int = 0,
    runs_dir: str | Path | None = None,
    show_reference: bool = False,
    only_different: bool = False,
) -> ExportedSheet:
    """A rating sheet of two runs' (or, for Likert, one run's) predictions on the same examples.

    Args:
        run_a / run_b: run ids, prefixes or ``latest``; ``run_b`` may be None for a Likert sheet.
        out_dir: where the sheet, form and key go.
        mode: ``pairwise`` or ``likert``.
        n: examples to rate (a seeded random sample of the split; None: all).
        split: ``test``, ``val`` or ``train``; both runs must have the same data there.
        show_reference: show raters the true label.
        only_different: pairwise only: sample among examples where the runs' outputs differ
            (the win rate then answers "when they disagree, which is better?"; the key says so).

    Returns:
        :class:`ExportedSheet`.
    """
    if mode == "pairwise" and run_b is None:
        raise ValueError("a pairwise sheet needs two runs (--pairwise RUN_B)")
    refs = [run_a] if run_b is None else [run_a, run_b]
    items, systems = run_items(refs, split=split, runs_dir=runs_dir)
    if only_different:
        items = [item for item in items if len(set(item.outputs.values())) > 1]
        if not items:
            raise ValueError(f"the runs' outputs are identical on every {split} example; nothing to compare")
    meta = {"split": split, "runs": list(systems.values()), "only_different": only_different}
    return export_sheet(
        items, out_dir, mode=mode, systems=systems, n=n, seed=seed, show_reference=show_reference, meta=meta,
        title=f"Rate model outputs ({len(items) if n is None else min(n, len(items))} examples)",
    )  # fmt: skip


def run_items(
    refs: Sequence[str], *, split: str = "test", runs_dir: str | Path | None = None
) -> tuple[list[HumanItem], dict[str, str]]:
    """Items of ``split`` with each run's output as text (systems labelled A, B, ...).

    The texts are the task's (``human_texts`` in `ember.tasks.contract`): a class and its confidence,
    predicted values, a translation beside its source. A task whose outputs have no text form is
    refused with what to do instead. The runs must have been evaluated on identical data.

    Returns:
        ``(items, {"A": run_id, ...})``.
    """
    from ember.evaluate.predictions import run_predictions
    from ember.tasks import contract

    texts: dict[str, list[dict[str, str]]] = {}
    systems: dict[str, str] = {}
    first: Any = None
    for label, ref in zip("ABCDEFGH", refs):
        p = run_predictions(ref, split, runs_dir=runs_dir)
        if first is not None and _data_key(p) != _data_key(first):
            raise ValueError(
                f"run {p.record.id} has different {split} data than run {systems['A']}; "
                "human ratings compare outputs on the same examples, so train both on the same data and split"
            )
        first = first or p
        texts[label] = contract.human_texts(p.task, p.evaluation, p.spec)
        systems[label] = p.record.id
    items = []
    for i, shown in enumerate(texts["A"]):
        image, text = None, shown.get("input")
        if text is None:
            image, text = _input(first, i)
        outputs = {k: v[i]["output"] for k, v in texts.items()}
        items.append(HumanItem(f"{split}:{i}", text, outputs, image, shown.get("reference")))
    return items, systems


def _data_key(p: Any) -> str:
    """What identifies a run's evaluated examples: its data hash (data and splits), else the data's."""
    from ember.data import fingerprint_dataset

    return str(p.record.data_sha256 or fingerprint_dataset(p.data))


def _input(p: Any, i: int) -> tuple[str | None, str]:
    """Example ``i`` of the evaluated data, as an image (PNG data URI) or as text."""
    x = p.data[i][0]
    if p.spec.inputs.kind == "image":
        return _png_uri(x), ""
    if p.spec.inputs.kind == "tokens" and p.run.tokenizer is not None:
        pad = p.spec.inputs.pad_id
        return None, str(p.run.tokenizer.decode([int(t) for t in x.tolist() if t != pad]))
    return None, _describe(x)


def _describe(value: Any) -> str:
    flat = np.asarray(value, dtype=float).reshape(-1)
    shown = ", ".join(f"{v:.4g}" for v in flat[:32])
    return shown + (f", ... ({len(flat)} values)" if len(flat) > 32 else "")


def _png_uri(image: Any) -> str:
    """A ``(C, H, W)`` image in [0, 1] as a PNG data URI."""
    import base64
    import io

    from PIL import Image

    array = np.asarray(image, dtype=np.float32)
    pixels = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
    pil = (
        Image.fromarray(pixels[0]) if pixels.shape[0] == 1 else Image.fromarray(pixels[:3].transpose(1, 2, 0))
    )
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# --------------------------------------------------------------------------- import


@dataclass
class HumanResult:
    """What the ratings say: win rates, Likert means, agreement, and what was dropped.

    Attributes:
        mode: ``pairwise`` or ``likert``.
        systems: system label → description, from the key.
        raters: rater names seen.
        judgments: ratings used; ``items``: distinct items they cover.
        win_rate: pairwise: ``{"A": {...}, "B": {...}}`` per system ``estimate``, ``low``, ``high``
            (ties half), plus counts and a sign-test ``p_value``; Likert: the same from per-item means.
        likert: Likert only: per system ``mean``, ``low``, ``high``; ``difference`` (first - second).
        agreement: ``cohen_kappa``, ``fleiss_kappa``, ``krippendorff_alpha`` (None where undefined)
            with the items each used.
        notes: rows skipped and why.
    """

    mode: str
    systems: dict[str, str]
    raters: list[str]
    judgments: int
    items: int
    win_rate: dict[str, Any]
    likert: dict[str, Any] | None
    agreement: dict[str, Any]
    confidence: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "systems": self.systems,
            "raters": self.raters,
            "judgments": self.judgments,
            "items": self.items,
            "confidence": self.confidence,
            "win_rate": self.win_rate,
            "likert": self.likert,
            "agreement": self.agreement,
            "notes": self.notes,
        }

    def summary(self) -> str:
        """A few lines for a terminal."""
        pct = f"{self.confidence:.0%}"
        lines = [
            f"{self.mode} ratings: {self.judgments} judgments of {self.items} items by "
            f"{len(self.raters)} rater(s): {', '.join(self.raters)}"
        ]
        for label, desc in self.systems.items():
            w = self.win_rate.get(label)
            if w:
                lines.append(
                    f"  {label} ({desc}): win rate {w['estimate']:.3f}  [{w['low']:.3f}, {w['high']:.3f}] {pct} CI"
                )
        counts = self.win_rate.get("counts")
        if counts:
            lines.append("  " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        if self.win_rate.get("p_value") is not None:
            lines.append(f"  sign test over items: p = {self.win_rate['p_value']:.4g}")
        if self.likert:
            for label in self.systems:
                m = self.likert.get(label)
                if m:
                    lines.append(f"  {label} mean rating {m['mean']:.3f}  [{m['low']:.3f}, {m['high']:.3f}]")
            d = self.likert.get("difference")
            if d:
                lines.append(
                    f"  difference {d['label']}: {d['mean']:+.3f}  [{d['low']:+.3f}, {d['high']:+.3f}]"
                )
        lines.append("agreement:")
        for name, a in self.agreement.items():
            value = "n/a" if a.get("value") is None else f"{a['value']:.3f}"
            lines.append(f"  {name:20s} {value}  ({a.get('note', '')})")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def import_ratings(
    paths: Sequence[str | Path] | str | Path,
    key: str | Path | None = None,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> HumanResult:
    """Unblind filled rating sheets and compute win rates, intervals and agreement.

    Args:
        paths: one or more filled ``sheet.csv`` files (by hand or from ``form.html``), any number
            of raters each.
        key: the sheet's ``key.json`` (default: ``key.json`` beside the first file).
        confidence: level of the bootstrap intervals.
        resamples: bootstrap resamples (items are resampled, with all their ratings).
        seed: seeds the bootstrap.

    Returns:
        :class:`HumanResult`.
    """
    files = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    if not files:
        raise ValueError("no rating files given")
    key_path = Path(key) if key is not None else files[0].parent / "key.json"
    if not key_path.is_file():
        raise FileNotFoundError(
            f"no key at {key_path}; pass the key.json written with the sheet (--key PATH)"
        )
    blind = json.loads(key_path.read_text(encoding="utf-8"))
    mode, labels = blind["mode"], list(blind["systems"])
    notes: list[str] = []
    ratings: dict[tuple[str, str], str] = {}  # (rater, row) -> rating as written
    for path in files:
        ratings.update(_read_ratings(path, blind, notes))
    if not ratings:
        raise ValueError(f"no filled ratings in {', '.join(map(str, files))}: the 'rating' column is empty")
    raters = sorted({r for r, _ in ratings})
    rows = sorted({row for _, row in ratings})
    rng = np.random.default_rng(seed)
    if mode == "pairwise":
        # unblind: "1"/"2" -> the system behind that side; ties stay ties
        value = {
            k: (blind["rows"][k[1]][f"output_{v}"] if v in ("1", "2") else "tie") for k, v in ratings.items()
        }
        items = sorted({blind["rows"][row]["item"] for row in rows})
        win = _pairwise_wins(value, blind, labels, items, confidence, resamples, rng)
        likert = None
        agreement = rating_agreement(value, raters, rows, level="nominal")
    else:
        scores = {k: int(v) for k, v in ratings.items()}
        items = sorted({blind["rows"][row]["item"] for row in rows})
        likert, win = _likert(scores, blind, labels, items, confidence, resamples, rng)
        agreement = rating_agreement(scores, raters, rows, level="ordinal")
    return HumanResult(
        mode, blind["systems"], raters, len(ratings), len(items), win, likert, agreement, confidence, notes
    )


def _read_ratings(path: Path, blind: dict[str, Any], notes: list[str]) -> dict[tuple[str, str], str]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = {"sheet", "row", "rating", "rater"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {sorted(missing)}; expected the columns of sheet.csv"
            )
        out: dict[tuple[str, str], str] = {}
        blank = 0
        for line, record in enumerate(reader, start=2):
            if record["sheet"] != blind["sheet"]:
                raise ValueError(
                    f"{path} line {line}: sheet '{record['sheet']}' is not the key's sheet '{blind['sheet']}'; "
                    "use the key.json exported with this sheet"
                )
            row, rating = record["row"], (record["rating"] or "").strip().lower()
            if row not in blind["rows"]:
                raise ValueError(f"{path} line {line}: row '{row}' is not in the key")
            if not rating:
                blank += 1
                continue
            if blind["mode"] == "pairwise" and rating not in PAIRWISE_CHOICES:
                raise ValueError(f"{path} line {line}: rating '{rating}' must be one of 1, 2, tie")
            if blind["mode"] == "likert" and (not rating.isdigit() or not 1 <= int(rating) <= blind["scale"]):
                raise ValueError(
                    f"{path} line {line}: rating '{rating}' must be a whole number 1..{blind['scale']}"
                )
            rater = (record["rater"] or "").strip() or path.stem
            if (rater, row) in out:
                notes.append(f"{path.name}: rater '{rater}' rated row {row} twice; the last rating counts")
            out[(rater, row)] = rating
        if blank:
            notes.append(f"{path.name}: {blank} row(s) without a rating were skipped")
    return out


def _pairwise_wins(
    winner: dict[tuple[str, str], str],
    blind: dict[str, Any],
    labels: list[str],
    items: list[str],
    confidence: float,
    resamples: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    from scipy.stats import binomtest

    first, second = labels
    index = {item: i for i, item in enumerate(items)}
    sums, counts = np.zeros(len(items)), np.zeros(len(items))
    for (_, row), w in winner.items():
        i = index[blind["rows"][row]["item"]]
        sums[i] += 1.0 if w == first else 0.5 if w == "tie" else 0.0
        counts[i] += 1
    estimate, low, high = _ratio_bootstrap(sums, counts, confidence, resamples, rng)
    per_item = sums / counts
    wins_first, wins_second = int((per_item > 0.5).sum()), int((per_item < 0.5).sum())
    decided = wins_first + wins_second
    p = binomtest(wins_first, decided, 0.5).pvalue if decided else 1.0
    tally = {label: sum(1 for w in winner.values() if w == label) for label in (first, second, "tie")}
    return {
        first: {"estimate": estimate, "low": low, "high": high},
        second: {"estimate": 1 - estimate, "low": 1 - high, "high": 1 - low},
        "counts": {f"{k} preferred" if k != "tie" else "ties": v for k, v in tally.items()},
        "items_won": {first: wins_first, second: wins_second, "even": len(items) - decided},
        "p_value": float(p),
    }


def _likert(
    rating: dict[tuple[str, str], int],
    blind: dict[str, Any],
    labels: list[str],
    items: list[str],
    confidence: float,
    resamples: int,
    rng: np.random.Generator,
) -> tuple[dict[str, Any], dict[str, Any]]:
    index = {item: i for i, item in enumerate(items)}
    sums = {label: np.zeros(len(items)) for label in labels}
    counts = {label: np.zeros(len(items)) for label in labels}
    for (_, row), r in rating.items():
        entry = blind["rows"][row]
        sums[entry["system"]][index[entry["item"]]] += r
        counts[entry["system"]][index[entry["item"]]] += 1
    out: dict[str, Any] = {}
    for label in labels:
        mean, low, high = _ratio_bootstrap(sums[label], counts[label], confidence, resamples, rng)
        out[label] = {"mean": mean, "low": low, "high": high, "ratings": int(counts[label].sum())}
    win: dict[str, Any] = {}
    if len(labels) == 2:
        first, second = labels
        both = (counts[first] > 0) & (counts[second] > 0)
        a = sums[first][both] / counts[first][both]
        b = sums[second][both] / counts[second][both]
        if both.any():
            diff, dlow, dhigh = _ratio_bootstrap(a - b, np.ones(len(a)), confidence, resamples, rng)
            out["difference"] = {"label": f"{first} - {second}", "mean": diff, "low": dlow, "high": dhigh,
                                 "items": int(both.sum())}  # fmt: skip
            score = np.where(a > b, 1.0, np.where(a == b, 0.5, 0.0))
            est, low, high = _ratio_bootstrap(score, np.ones(len(score)), confidence, resamples, rng)
            win = {
                first: {"estimate": est, "low": low, "high": high},
                second: {"estimate": 1 - est, "low": 1 - high, "high": 1 - low},
                "items_won": {
                    first: int((a > b).sum()),
                    second: int((a < b).sum()),
                    "even": int((a == b).sum()),
                },
            }
    return out, win


def _ratio_bootstrap(
    sums: np.ndarray, counts: np.ndarray, confidence: float, resamples: int, rng: np.random.Generator
) -> tuple[float, float, float]:
    """``sum(sums) / sum(counts)`` and its percentile interval, resampling items (rows) with replacement."""
    keep = counts > 0
    sums, counts = sums[keep], counts[keep]
    estimate = float(sums.sum() / counts.sum())
    m = len(sums)
    if m < 2:
        return estimate, math.nan, math.nan
    weights = rng.multinomial(m, np.full(m, 1.0 / m), size=resamples)  # (B, m) item multiplicities
    stats = (weights @ sums) / np.maximum(weights @ counts, 1e-12)
    tail = (1 - confidence) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    return estimate, float(low), float(high)


__all__ = [
    "ExportedSheet",
    "HumanItem",
    "HumanResult",
    "export_runs",
    "export_sheet",
    "import_ratings",
    "run_items",
]
