"""Model cards (Mitchell et al. 2019) written from what the run store and the bundle already know.

:func:`card_of_run` gathers, for a finished run: intended use (``card.*`` of the config, or a sentence
made from its data and task), the data and its fingerprint, the test metrics with bootstrap
intervals beside the baselines (``ember.evaluate.scorecard``), per-group metrics (the run's saved
``fairness.json``), explanation examples and their sanity verdicts (``explain.json``), the
findings of ``ember check``, limitations, the privacy budget when the run recorded one, and the
training compute with an energy estimate from the measured time. :func:`card_of_bundle` does the
same from a bundle's ``meta.json`` (metrics as recorded, without intervals).

A card is a list of sections rendered to Markdown (:meth:`ModelCard.markdown`) or one
self-contained HTML page (:meth:`ModelCard.html`). The energy estimate is
``seconds x cores x watts_per_core`` (default 4 W per busy core: an AMD EPYC 9004 package's TDP
over its cores), or the GPUs' board power when the run trained on CUDA (default 300 W each); it is
an estimate and says so.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

WATTS_PER_CORE = 4.0
WATTS_PER_GPU = 300.0


@dataclass
class Section:
    """A titled part of the card: paragraphs, then an optional table, then optional images."""

    title: str
    text: list[str] = field(default_factory=list)
    header: list[str] | None = None
    rows: list[list[str]] = field(default_factory=list)
    images: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass
class ModelCard:
    """A model card: its title and sections."""

    title: str
    sections: list[Section]

    def markdown(self) -> str:
        """The card as Markdown (images are referred to by name, not embedded)."""
        out = [f"# {self.title}", ""]
        for s in self.sections:
            out += [f"## {s.title}", ""]
            for t in s.text:
                out += [t, ""]
            if s.header:
                out.append("| " + " | ".join(s.header) + " |")
                out.append("|" + "|".join("---" for _ in s.header) + "|")
                out += ["| " + " | ".join(r) + " |" for r in s.rows]
                out.append("")
        return "\n".join(out).rstrip() + "\n"

    def html(self) -> str:
        """The card as one self-contained HTML page (images embedded)."""
        parts = [
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>",
            "<style>body{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
            "img{max-width:100%}</style></head><body>",
            f"<h1>{html.escape(self.title)}</h1>",
        ]
        for s in self.sections:
            parts.append(f"<h2>{html.escape(s.title)}</h2>")
            parts += [f"<p>{_inline(t)}</p>" for t in s.text]
            if s.header:
                parts.append(
                    "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in s.header) + "</tr>"
                )
                parts += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in s.rows]
                parts.append("</table>")
            for name, png in s.images:
                data = base64.b64encode(png).decode()
                parts.append(f'<p><img alt="{html.escape(name)}" src="data:image/png;base64,{data}"></p>')
        parts.append("</body></html>")
        return "\n".join(parts)


def _inline(text: str) -> str:
    """Markdown's inline code and bold, as HTML."""
    out = html.escape(text)
    for mark, tag in (("`", "code"), ("**", "b")):
        pieces = out.split(mark)
        out = "".join(p if i % 2 == 0 else f"<{tag}>{p}</{tag}>" for i, p in enumerate(pieces))
    return out


def _f(x: Any) -> str:
    return (
        "-"
        if x is None or (isinstance(x, float) and math.isnan(x))
        else f"{x:.4f}"
        if isinstance(x, float)
        else str(x)
    )


def _ci(d: dict[str, float]) -> str:
    low, high = d.get("low"), d.get("high")
    if low is None or high is None or any(math.isnan(v) for v in (low, high)):
        return _f(d.get("value"))
    return f"{d['value']:.4f} [{low:.4f}, {high:.4f}]"


# --------------------------------------------------------------------------- sections


def intended_use(cfg: dict[str, Any], classes: list[str] | None) -> Section:
    card = cfg.get("card") or {}
    data, task = cfg.get("data", {}), cfg.get("task", {})
    what = f"{task.get('name', 'classification')} on `{data.get('name', '?')}` data"
    if classes:
        shown = ", ".join(classes[:10]) + (" ..." if len(classes) > 10 else "")
        what += f" into {len(classes)} classes ({shown})"
    text = [card.get("intended_use") or f"A `{cfg.get('model', {}).get('name', '?')}` model for {what}."]
    if card.get("out_of_scope"):
        text.append(f"**Out of scope:** {card['out_of_scope']}")
    if card.get("owners"):
        text.append(f"**Owners:** {card['owners']}")
    return Section("Intended use", text)


def data_section(cfg: dict[str, Any], data_sha256: str | None, splits: dict[str, int]) -> Section:
    data = cfg.get("data", {})
    options = {
        k: v for k, v in data.items() if k not in ("batch_size", "eval_batch_size", "num_workers", "augment")
    }
    text = [f"Dataset `{data.get('name', '?')}`; options: `{json.dumps(options, sort_keys=True)}`."]
    text.append(f"Fingerprint (data and split hashes, sha256): `{data_sha256 or 'not recorded'}`.")
    rows = [[name, str(n)] for name, n in splits.items()]
    return Section("Data", text, ["split", "examples"] if rows else None, rows)


def metrics_section(card: Any) -> Section:
    """From an ``ember.evaluate`` scorecard: the model's intervals beside each baseline's."""
    d = card.to_dict()
    names = list(d["intervals"])[:8]
    header = ["model / baseline", *names, f"margin on {d['headline']} (p)"]
    rows = [["**this model**", *(_ci(d["intervals"][n]) for n in names), "-"]]
    for b in d["baselines"]:
        margin = (
            "-"
            if b["margin"] is None
            else f"{_ci(b['margin']['difference'])} (p={b['margin']['p_value']:.3g})"
        )
        rows.append(
            [b["name"], *(_ci(b["intervals"][n]) if n in b["intervals"] else "-" for n in names), margin]
        )
    text = [
        f"On the {d['split']} split ({d['n']} {d['unit']}); {int(d['confidence'] * 100)}% bootstrap intervals "
        f"over {d['n_resamples']} resamples; baselines fitted on the training split."
    ] + [f"Note: {n}" for n in d["notes"]]
    return Section("Metrics", text, header, rows)


def fairness_section(saved: dict[str, Any] | None) -> Section:
    if saved is None:
        return Section(
            "Per-group metrics",
            ["Not audited. Run `ember audit fairness RUN --sensitive COLUMNS` and make the card again."],
        )
    rows, text = [], [f"On the {saved['split']} split, by {', '.join(saved['sensitive'])}."]
    for a in saved["audits"]:
        first = a["by_group"][a["groups"][0]]
        sel = (
            "selection_rate"
            if "selection_rate" in first
            else next((k for k in first if k.startswith("selection_rate")), None)
        )
        for g in a["groups"]:
            m = a["by_group"][g]
            rows.append([a["attribute"], g, str(a["counts"][g]), _ci(m["accuracy"]), _ci(m[sel]) if sel else "-",
                         _ci(m["ece"]) if "ece" in m else "-"])  # fmt: skip
        gaps = a["gaps"]
        text.append(
            f"**{a['attribute']}**: demographic-parity difference {_ci(gaps['demographic_parity_difference'])}, "
            f"equalized-odds difference {_ci(gaps['equalized_odds_difference'])}."
        )
    post = saved.get("postprocessed")
    if post:
        text.append(
            f"Per-group thresholds ({post['rule']['criterion']}, fitted on val) give accuracy {post['accuracy']:.4f} "
            f"(from {saved['accuracy']:.4f})."
        )
    return Section(
        "Per-group metrics", text, ["attribute", "group", "n", "accuracy", "selection rate", "ECE"], rows
    )


def explanation_section(folder: Path) -> Section:
    path = folder / "explain.json"
    if not path.is_file():
        return Section(
            "Explanations", ["None saved. Run `ember explain RUN --input 0:16` and make the card again."]
        )
    saved = json.loads(path.read_text())
    rows = [
        [n, f"{s['score']:+.3f}", "passes" if s["passed"] else "**fails**"]
        for n, s in saved["sanity"].items()
    ]
    text = [f"Methods on {len(saved['indices'])} {saved['kind']} inputs: {', '.join(saved['methods'])}."]
    if saved.get("ig_completeness_error_max") is not None:
        text.append(
            f"Integrated gradients' largest completeness error: {saved['ig_completeness_error_max']:.2e}."
        )
    example = folder / "explain-example.png"
    images = [("explanation example", example.read_bytes())] if example.is_file() else []
    return Section(
        "Explanations",
        text,
        ["method", "mean rank correlation under randomization", "sanity check"] if rows else None,
        rows,
        images,
    )


def checks_section(findings: list[Any] | None) -> Section:
    if findings is None:
        return Section("Check findings", ["Not run (`ember check RUN`)."])
    rows = [
        [f.severity, f.name, f.message]
        for f in sorted(findings, key=lambda f: ("error", "warning", "info").index(f.severity))
    ]
    return Section(
        "Check findings",
        [] if rows else ["No findings."],
        ["severity", "check", "finding"] if rows else None,
        rows,
    )


def privacy_section(folder: Path, summary: dict[str, Any]) -> Section | None:
    """The run's privacy budget: ``privacy.json`` in its folder, or ``epsilon`` in its summary."""
    path = folder / "privacy.json"
    saved = json.loads(path.read_text()) if path.is_file() else {}
    eps = saved.get("epsilon", summary.get("epsilon", summary.get("privacy/epsilon")))
    if eps is None:
        return None
    delta = saved.get("delta", summary.get("delta", summary.get("privacy/delta")))
    return Section(
        "Privacy",
        [f"Trained with differential privacy: ε = {eps:.3g}" + (f", δ = {delta:g}." if delta else ".")],
    )


def compute_section(record: Any, steps: Any, parameters: int | None, watts_per_core: float) -> Section:
    env = record.environment or {}
    seconds = record.duration_s
    gpus = env.get("gpus") or []
    cores = int(env.get("torch_threads") or env.get("cpu_count") or 1)
    if seconds is None:
        return Section("Training compute", ["The run did not finish: no time recorded."])
    watts = WATTS_PER_GPU * len(gpus) if gpus else watts_per_core * cores
    kwh = seconds * watts / 3.6e6
    where = ", ".join(gpus) if gpus else f"{cores} CPU threads on {env.get('processor', 'a CPU')}"
    text = [
        f"{seconds:.1f} s wall time, {steps} optimizer steps, on {where}"
        + (f"; {parameters:,} parameters." if parameters else "."),
        f"Energy estimate: {kwh * 1000:.3g} Wh (= {seconds:.1f} s x {watts:g} W, "
        + ("the GPUs' board power" if gpus else f"{watts_per_core:g} W per busy core")
        + "; an estimate from measured time, not a power measurement).",
    ]
    return Section("Training compute", text)


def limitations(
    cfg: dict[str, Any], card: Any, fairness: dict[str, Any] | None, folder: Path, findings: list[Any] | None
) -> Section:
    items = list((cfg.get("card") or {}).get("limitations") or [])
    if card is not None:
        ece = card.intervals.get("ece")
        if ece is not None and ece.value > 0.05:
            items.append(
                f"Confidence is miscalibrated (ECE {ece.value:.3f}): do not read probabilities as frequencies."
            )
        items += [f"Evaluation: {n}" for n in card.notes]
    if fairness is not None:
        for a in fairness["audits"]:
            dp = a["gaps"]["demographic_parity_difference"]["value"]
            if dp > 0.1:
                items.append(f"Selection rates differ across {a['attribute']} groups by {dp:.3f}.")
    saved = folder / "explain.json"
    if saved.is_file():
        failed = json.loads(saved.read_text()).get("flagged") or []
        items += [
            f"Explanations by {m} fail the randomization sanity check: do not use them." for m in failed
        ]
    if findings:
        items += [f"{f.severity}: {f.message}" for f in findings if f.severity in ("error", "warning")]
    items.append(
        "Figures hold for data like the test split; shifted inputs (see `ember check`) may score lower."
    )
    return Section("Limitations", [f"- {i}" for i in items])


# --------------------------------------------------------------------------- whole cards


def card_of_run(
    ref: str,
    *,
    runs_dir: str | Path | None = None,
    split: str = "test",
    checks: bool = True,
    n_resamples: int = 1000,
    watts_per_core: float = WATTS_PER_CORE,
) -> ModelCard:
    """The card of run ``ref`` (see the module docstring)."""
    from ember.evaluate import run_predictions, scorecard
    from ember.evaluate.checks import run_checks
    from ember.responsible.fairness_run import load_fairness
    from ember.track import RunStore

    record = RunStore(runs_dir).get(ref)
    cfg = yaml.safe_load(record.config) or {}
    p = run_predictions(record.id, split, runs_dir=runs_dir)
    card = scorecard(p, n_resamples=n_resamples)
    findings = run_checks(record.id, runs_dir=runs_dir) if checks else None
    fairness = load_fairness(record.folder)
    prep = p.run.prepared  # a recipe run: its split indices; a Python run: the splits it kept
    if prep is not None:
        splits = {k: len(v) for k, v in prep.splits.items()}
        if prep.bundle.test is not None and "test" not in splits:
            splits["test"] = len(prep.bundle.test)  # type: ignore[arg-type]
    else:
        splits = {k: len(p.run.split(k)) for k in p.run.available_splits()}
    parameters = sum(t.numel() for t in p.run.model.parameters())
    sections = [
        intended_use(cfg, p.classes),
        data_section(cfg, record.data_sha256, splits),
        metrics_section(card),
        fairness_section(fairness),
        explanation_section(record.folder),
        checks_section(findings),
    ]
    privacy = privacy_section(record.folder, record.summary or {})
    if privacy is not None:
        sections.append(privacy)
    sections.append(
        compute_section(record, (record.summary or {}).get("steps", "?"), parameters, watts_per_core)
    )
    sections.append(limitations(cfg, card, fairness, record.folder, findings))
    sections.append(Section("Provenance", [
        f"Run `{record.id}` ({record.status}), seed {record.seed}, source `{(record.source or {}).get('git') or (record.source or {}).get('source_sha256')}`, "
        f"config sha256 `{record.config_sha256}`.",
    ]))  # fmt: skip
    return ModelCard(f"Model card: {record.name} ({record.id})", sections)


def card_of_bundle(path: str | Path) -> ModelCard:
    """A card from a bundle's own ``meta.json`` and config (metrics as recorded, no intervals)."""
    from ember.config import to_dict
    from ember.deploy.bundle import open_bundle

    b = open_bundle(path)
    meta, cfg = b.meta, to_dict(b.config)
    metrics = {
        k: v
        for k, v in (meta.get("metrics") or {}).items()
        if isinstance(v, int | float) and k.startswith(("val/", "test/")) and "/class_" not in k
    }
    data = meta.get("data") or {}
    sections = [
        intended_use(cfg, b.classes),
        data_section(cfg, data.get("sha256"), data.get("sizes") or {}),
        Section(
            "Metrics",
            ["As recorded in the bundle (no intervals: make the card from the run for them)."],
            ["metric", "value"],
            [[k, _f(float(v))] for k, v in sorted(metrics.items())],
        ),  # fmt: skip
        Section(
            "Limitations",
            ["- Made from a bundle alone: per-group metrics, checks and explanations need the run."],
        ),
        Section(
            "Provenance",
            [
                f"Bundle `{Path(path).name}` sha256 `{b.sha256}`; run `{(meta.get('run') or {}).get('id', '?')}`."
            ],
        ),
    ]
    return ModelCard(f"Model card: {Path(path).stem}", sections)


__all__ = ["ModelCard", "Section", "card_of_bundle", "card_of_run"]
