"""``ember report RUN``: one self-contained HTML page about a run, plots embedded as base64 PNG.

Sections (each a ``<section id=...>``): ``summary``, ``metrics`` (with intervals, beside the
baselines), ``baselines`` (what they are, the margin with its interval and p-value), ``curves`` (loss
and validation metrics), ``learning-rate``, then the task's own items (``report_items`` in
`ember.tasks.contract`, kinds in `ember.tasks.items`) in ``confusion`` (a confusion matrix, or
predictions against the truth), ``calibration``, ``per-class`` and ``mistakes`` (the worst
examples), ``samples`` (a grid of the images a generative model makes, the contract's
``report_samples``), then ``checks`` (from :mod:`ember.evaluate.checks` when it is there) and ``facts``
(config, data hash, source, environment, files). The report draws the items without knowing the
family; a section the task has nothing for says so instead of disappearing.

Example:
    >>> import ember, tempfile
    >>> runs = tempfile.mkdtemp()
    >>> run = ember.fit("configs/digits-cnn.yaml", {"trainer.epochs": 1, "model.name": "cnn_tiny"}, runs_dir=runs)
    >>> path = write_report(run.run_id, runs_dir=runs, n_resamples=100)
    >>> path.name, "<img" in path.read_text()
    ('report.html', True)
"""

from __future__ import annotations

import base64
import html
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ember import metrics as M
from ember.evaluate import report_plots as plots
from ember.evaluate.predictions import RunPredictions, run_predictions
from ember.evaluate.scorecard import Scorecard, fmt_p, scorecard
from ember.tasks import contract, items
from ember.tasks.spec import NotApplicable
from ember.track import RunStore

SECTIONS = (
    ("summary", "Summary"),
    ("metrics", "Metrics"),
    ("baselines", "Baselines"),
    ("curves", "Training curves"),
    ("learning-rate", "Learning rate"),
    ("confusion", "Confusion matrix"),
    ("calibration", "Calibration"),
    ("per-class", "Per-class metrics"),
    ("mistakes", "Worst mistakes"),
    ("samples", "Samples"),
    ("checks", "Checks"),
    ("facts", "Run facts"),
)

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1d2330;background:#f4f5f8;margin:0}
header{background:#1d2a44;color:#fff;padding:18px 32px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#c8d1e6}nav{padding:8px 32px;background:#e6e9f0;position:sticky;top:0}
nav a{margin-right:14px;color:#2f4f8a;text-decoration:none;font-size:13px}
main{max-width:1100px;margin:0 auto;padding:8px 24px 40px}
section{background:#fff;border-radius:8px;padding:14px 22px;margin:16px 0;box-shadow:0 1px 3px #0002}
h2{font-size:17px;margin:4px 0 10px;color:#1d2a44}table{border-collapse:collapse;margin:6px 0;font-size:13px}
th,td{padding:4px 10px;border-bottom:1px solid #e3e6ec;text-align:left;vertical-align:top}
th{background:#f0f2f6}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
img{max-width:100%;height:auto;display:block;margin:8px 0}pre{background:#f6f7f9;padding:10px;overflow:auto;font-size:12px}
.note{color:#5b6375;font-size:13px}.big{font-size:20px;font-weight:600}
.sev{padding:1px 8px;border-radius:10px;font-size:12px;color:#fff}.sev-info{background:#5b7bb5}
.sev-warning{background:#d9822b}.sev-error,.sev-critical{background:#c23b3b}.sev-ok{background:#3a9a5b}
.yes{color:#2e7d46;font-weight:600}.no{color:#8a8f9c}
"""


def write_report(
    ref: str,
    out: str | Path | None = None,
    *,
    split: str = "test",
    runs_dir: str | Path | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    data: str | Path | None = None,
) -> Path:
    """Write the report of run ``ref`` on ``split`` (or on the ``.npz`` arrays ``data``) to ``out``
    (default ``<run folder>/report.html``)."""
    predictions = run_predictions(ref, split, runs_dir=runs_dir, data=data)
    page = render(predictions, runs_dir=runs_dir, n_resamples=n_resamples, seed=seed)
    path = Path(out) if out is not None else predictions.record.folder / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def render(
    predictions: RunPredictions,
    *,
    runs_dir: str | Path | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> str:
    """The report's HTML for an already evaluated run (see :func:`write_report`)."""
    p = predictions
    card = scorecard(p, n_resamples=n_resamples, seed=seed)
    store = RunStore(runs_dir)
    history = store.metrics(p.record.id)
    body: dict[str, str] = {
        "summary": _summary(p, card),
        "metrics": _metrics(card),
        "baselines": _baselines(card),
        "curves": _curves(history),
        "learning-rate": _learning_rate(history),
        "samples": _samples(p.task, p.run.model, p.spec, p.task_name),
        "checks": _checks(p.record.id, runs_dir),
        "facts": _facts(p),
    }
    titles = dict(SECTIONS)
    try:
        shown = contract.report_items(p.task, p.evaluation, p.data, p.spec)
    except NotApplicable as e:
        shown, body["mistakes"] = [], _note(f"the task's report items are not available: {e}")
    for key, html_part, heading in _drawn(shown):
        body[key] = body.get(key, "") + html_part
        if heading and titles[key] == dict(SECTIONS)[key]:
            titles[key] = heading
    for key, _ in SECTIONS:
        body.setdefault(key, _note(f"not applicable to the {p.task_name} task, or not available for it yet"))
    nav = "".join(f'<a href="#{key}">{html.escape(titles[key])}</a>' for key, _ in SECTIONS)
    sections = "".join(
        f'<section id="{key}"><h2>{html.escape(titles[key])}</h2>{body[key]}</section>' for key, _ in SECTIONS
    )
    r = p.record
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>ember report: {html.escape(r.id)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>ember report: {html.escape(r.name)}</h1><p>run {html.escape(r.id)} · "
        f"{html.escape(p.split)} split · {card.n} {html.escape(card.unit)} · written {time.strftime('%Y-%m-%d %H:%M')}</p></header>"
        f"<nav>{nav}</nav><main>{sections}</main></body></html>"
    )


# --------------------------------------------------------------------------- pieces


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    lines = []
    for row in rows:
        cells = "".join(
            f"<td{' class=num' if i in numeric else ''}>{c if isinstance(c, _Raw) else html.escape(_text(c))}</td>"
            for i, c in enumerate(row)
        )
        lines.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(lines)}</table>"


class _Raw(str):
    """HTML that a table cell takes as it is."""


def _text(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4f}"
    return "-" if value is None else str(value)


def _ci(ci: Any) -> str:
    if ci is None:
        return "-"
    if math.isnan(ci.low):
        return f"{ci.value:.4f}"
    return f"{ci.value:.4f} [{ci.low:.4f}, {ci.high:.4f}]"


def _note(text: str) -> str:
    return f"<p class=note>{html.escape(text)}</p>"


def _summary(p: RunPredictions, card: Scorecard) -> str:
    r = p.record
    head = card.intervals.get(card.headline)
    value = _ci(head) if head else _text(card.metrics.get(card.headline))
    lines = [
        f"<p class=big>{html.escape(card.headline)} = {html.escape(value)}</p>",
        _note(
            f"{p.split} split, {card.n} {card.unit}; {card.confidence:.0%} percentile-bootstrap intervals from "
            f"{card.n_resamples} resamples of the {card.unit}. Task: {p.task_name} "
            f"({'higher' if card.mode == 'max' else 'lower'} {card.headline} is better)."
        ),
    ]
    best = [b for b in card.baselines if b.margin is not None]
    if best:
        strongest = max(
            best, key=lambda b: b.intervals[card.headline].value * (1 if card.mode == "max" else -1)
        )
        m = strongest.margin
        assert m is not None
        better = (m.difference.value > 0) == (card.mode == "max")
        verdict = (
            f"significant: the model is {'better' if better else 'worse'} than {strongest.name}"
            if m.significant
            else "not significant: the data cannot tell the model from this baseline"
        )
        lines.append(
            f"<p>Margin over the strongest baseline ({html.escape(strongest.name)}): "
            f"<b>{m.difference.value:+.4f}</b> [{m.difference.low:+.4f}, {m.difference.high:+.4f}], "
            f"{fmt_p(m.p_value)} ({verdict}).</p>"
        )
    lines.append(
        f"<p>Status: {html.escape(r.status)}; trained with seed {r.seed}; run folder {html.escape(str(r.folder))}.</p>"
    )
    lines += [_note(n) for n in card.notes]
    return "".join(lines)


def _metrics(card: Scorecard) -> str:
    names = list(card.intervals) or [k for k in card.metrics if "/" not in k]
    headers = ["metric", "model"] + [b.name for b in card.baselines]
    rows: list[list[Any]] = []
    for name in names:
        row: list[Any] = [
            name,
            _ci(card.intervals.get(name)) if name in card.intervals else _text(card.metrics.get(name)),
        ]
        row += [_ci(b.intervals.get(name)) for b in card.baselines]
        rows.append(row)
    if "loss" in card.metrics and "loss" not in card.intervals:
        rows.append(["loss (task's)", _text(card.metrics["loss"])] + ["" for _ in card.baselines])
    return _table(headers, rows, numeric=set(range(1, len(headers)))) + _note(
        "value [low, high]: the point estimate and its interval; baselines are scored on the same examples."
    )


def _baselines(card: Scorecard) -> str:
    if not card.baselines or card.headline not in card.intervals:
        return _note(f"no baselines for the {card.task} task yet")
    rows = []
    for b in card.baselines:
        m = b.margin
        rows.append([
            b.name, b.description, _ci(b.intervals.get(card.headline)),
            "-" if m is None else f"{m.difference.value:+.4f} [{m.difference.low:+.4f}, {m.difference.high:+.4f}]",
            "-" if m is None else fmt_p(m.p_value).removeprefix("p="),
            _Raw("<span class=yes>yes</span>" if m and m.significant else "<span class=no>no</span>"),
        ])  # fmt: skip
    table = _table(
        ["baseline", "what it is", card.headline, "margin (model - baseline)", "p", "significant"],
        rows,
        {2, 3, 4},
    )
    forest = [("model", *_triple(card.intervals[card.headline]))] + [
        (b.name, *_triple(b.intervals[card.headline])) for b in card.baselines
    ]
    png = plots.intervals(
        forest, title=f"{card.headline} with {card.confidence:.0%} intervals", xlabel=card.headline
    )
    return (
        table
        + _note("p: paired bootstrap, two-sided, for 'the model and the baseline score the same'.")
        + _img(png, f"{card.headline} of the model and baselines with intervals")
    )


def _triple(ci: Any) -> tuple[float, float, float]:
    return ci.value, ci.low, ci.high


def _series(
    history: list[tuple[int, int | None, str, float]], keep: Callable[[str], bool]
) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {}
    for step, _, name, value in history:
        if keep(name) and value is not None and math.isfinite(value):
            out.setdefault(name, []).append((step, value))
    return out


def _curves(history: list[tuple[int, int | None, str, float]]) -> str:
    losses = _series(history, lambda k: k in ("train/loss", "val/loss"))
    scores = _series(history, lambda k: k.startswith("val/") and k != "val/loss" and "/class_" not in k)
    if not losses and not scores:
        return _note("the run logged no training metrics")
    parts = [
        _note(
            "as logged by the run: training loss every trainer.log_every steps, validation after each epoch."
        )
    ]
    if losses:
        parts.append(
            _img(
                plots.curves(losses, title="Loss", ylabel="loss", log_y=True), "training and validation loss"
            )
        )
    if scores:
        parts.append(
            _img(plots.curves(scores, title="Validation metrics", ylabel="value"), "validation metrics")
        )
    return "".join(parts)


def _learning_rate(history: list[tuple[int, int | None, str, float]]) -> str:
    lr = _series(history, lambda k: k == "lr")
    if not lr:
        return _note("the run logged no learning rate")
    return _img(plots.curves(lr, title="Learning rate", ylabel="lr"), "learning rate by step") + _note(
        "as logged: every trainer.log_every optimizer steps and at each epoch's end."
    )


def _samples(task: Any, model: Any, spec: Any, task_name: str) -> str:
    """A grid of the model's samples (a column per class when it takes one), for a task that makes
    images (`ember.tasks.contract.report_samples`)."""
    from ember.generative.images import grid, png_bytes

    if not contract.makes_images(task):
        return _note(f"the {task_name} task makes no images")
    try:
        images, nrow, caption = contract.report_samples(task, model, spec)
    except (ValueError, NotApplicable) as e:
        return _note(f"no samples: {e}")
    scale = max(1, 56 // max(int(images.shape[-1]), 1))  # small images drawn at least 56 px a side
    return _img(png_bytes(grid(images, nrow=nrow), scale=scale), f"samples: {caption}") + _note(caption)


def _drawn(shown: Sequence[Any]) -> Iterator[tuple[str, str, str]]:
    """``(section, html, heading)`` of every item, in order (a confusion matrix gives two parts)."""
    for item in shown:
        heading = getattr(item, "heading", "")
        if isinstance(item, items.Confusion):
            yield item.section, _confusion(item), heading
            yield item.per_class_section, _per_class(item), ""
        elif isinstance(item, items.Calibration):
            yield item.section, _calibration(item), heading
        elif isinstance(item, items.Scatter):
            png = plots.scatter(item.x, item.y, title=item.title, xlabel=item.xlabel, ylabel=item.ylabel)
            yield item.section, _img(png, item.title) + (_note(item.note) if item.note else ""), heading
        elif isinstance(item, items.ImageGrid):
            png = plots.image_grid(list(item.images), list(item.captions), title=item.title)
            yield item.section, _img(png, item.title), heading
        elif isinstance(item, items.Table):
            table = _table(item.headers, item.rows, set(item.numeric)) if item.rows else ""
            yield item.section, (_note(item.note) if item.note else "") + table, heading
        else:
            raise TypeError(f"a report item is one of ember.tasks.items' kinds; got {type(item).__name__}")


def _confusion(item: items.Confusion) -> str:
    note = item.note or f"rows: true class; colour: share of the row; numbers: counts of {item.unit}."
    return _img(plots.confusion(np.asarray(item.matrix), list(item.classes)), "confusion matrix") + _note(
        note
    )


def _per_class(item: items.Confusion) -> str:
    m = np.asarray(item.matrix, dtype=np.float64)
    tp, support, predicted = np.diag(m), m.sum(axis=1), m.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):  # 0 where undefined, as torchmetrics gives it
        values = {
            "precision": np.where(predicted > 0, tp / predicted, 0.0),
            "recall": np.where(support > 0, tp / support, 0.0),
            "f1": np.where(support + predicted > 0, 2 * tp / (support + predicted), 0.0),
        }
        if item.iou:
            union = support + predicted - tp
            values["iou"] = np.where(union > 0, tp / union, np.nan)
    names = [str(c) for c in item.classes]
    headers = ["class", *(k if k != "f1" else "F1" for k in values), f"support ({item.unit})"]
    rows = [[names[i], *(float(v[i]) for v in values.values()), int(support[i])] for i in range(len(names))]
    png = plots.bars({k: np.nan_to_num(v).tolist() for k, v in values.items()}, names,
                     title="Per-class " + ", ".join(values), ylabel="score")  # fmt: skip
    return _table(headers, rows, set(range(1, len(headers)))) + _img(png, "per-class metrics")


def _calibration(item: items.Calibration) -> str:
    rel = M.reliability(item.scores, item.target)
    ece = M.calibration_error(item.scores, item.target)
    png = plots.reliability(
        rel.edges.numpy(), rel.confidence.numpy(), rel.accuracy.numpy(), rel.count.numpy(), ece=ece
    )
    return _img(png, "reliability diagram") + _note(
        "bars: accuracy of the examples whose top-1 confidence falls in each bin; a calibrated model follows the "
        f"diagonal. ECE (15 bins) = {ece:.4f}."
    )


def _checks(run_id: str, runs_dir: str | Path | None) -> str:
    try:
        from ember.evaluate.checks import run_checks
    except ImportError:
        return _note("checks unavailable: this ember has no ember.evaluate.checks module")
    try:
        findings = run_checks(run_id, runs_dir=runs_dir)
    except Exception as e:  # a failing check must not cost the rest of the report
        return _note(f"the checks failed to run: {type(e).__name__}: {e}")
    if not findings:
        return _note("every check passed: no findings")
    rows = []
    for f in findings:
        severity = str(getattr(f, "severity", "info")).lower()
        rows.append([
            _Raw(f"<span class='sev sev-{html.escape(severity)}'>{html.escape(severity)}</span>"),
            getattr(f, "name", "?"), getattr(f, "message", ""), _Raw(_evidence(getattr(f, "evidence", {}) or {})),
        ])  # fmt: skip
    return _table(["severity", "check", "finding", "evidence"], rows)


def _evidence(evidence: dict[str, Any]) -> str:
    """Scalar evidence inline; nested evidence folded into a <details> block of JSON."""
    flat = {k: v for k, v in evidence.items() if not isinstance(v, dict | list | tuple) and k != "run"}
    nested = {k: v for k, v in evidence.items() if isinstance(v, dict | list | tuple) and v}
    text = html.escape("; ".join(f"{k}: {_text(v) if isinstance(v, float) else v}" for k, v in flat.items()))
    if nested:
        body = html.escape(json.dumps(nested, indent=1, default=str))
        text += f"<details><summary>{html.escape(', '.join(nested))}</summary><pre>{body}</pre></details>"
    return text


def _facts(p: RunPredictions) -> str:
    r, store = p.record, p.run.store
    env = r.environment or {}
    packages = env.get("packages", {})
    rows: list[list[Any]] = [
        ["run", r.id], ["config name", r.name], ["status", r.status + (f" ({r.error})" if r.error else "")],
        ["created", time.ctime(r.created)],
        ["duration", "-" if r.duration_s is None else f"{r.duration_s:.1f} s"],
        ["data sha256 (data + splits)", r.data_sha256 or "-"], ["config sha256", r.config_sha256 or "-"],
        ["seed", r.seed], *([k, v] for k, v in p.run.data_facts().items()),
        ["model", p.spec.model or p.spec.entry_point or "a user's module"], ["task", p.task_name],
        ["source", f"git {r.source.get('git')} dirty={r.source.get('dirty')} source sha256 {r.source.get('source_sha256')}"],
        ["python", env.get("python")], ["platform", env.get("platform")],
        ["cpu / gpu", f"{env.get('cpu_count')} CPUs; GPUs: {', '.join(env.get('gpus') or []) or 'none'}"],
        ["packages", ", ".join(f"{k} {v}" for k, v in packages.items())],
    ]  # fmt: skip
    files = store.artifacts(r.id)
    parts = [_table(["fact", "value"], rows)]
    if files:
        parts.append(
            "<h3>Files</h3>" + _table(["path", "kind", "sha256", "bytes"], [list(f) for f in files], {3})
        )
    summary: list[list[Any]] = [
        [k, v] for k, v in (r.summary or {}).items() if "/class_" not in k and not isinstance(v, dict)
    ]
    if summary:
        parts.append("<h3>End of training</h3>" + _table(["value", ""], summary, {1}))
    parts.append("<h3>Config</h3><pre>" + html.escape(r.config) + "</pre>")
    return "".join(parts)


__all__ = ["SECTIONS", "render", "write_report"]
