"""One self-contained HTML page of explanations: overlays as embedded PNGs, the sanity check's table.

Images get one PNG per input (the input, then each method's map over it); table rows one bar chart
per input (the largest attributions, by column name); token ids a line of tokens shaded by score.
"""

from __future__ import annotations

import base64
import html

import numpy as np
import torch

from ember.evaluate.report_plots import _figure, _png
from ember.responsible.explain_run import RunExplanations

STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}
.fail{color:#b00;font-weight:bold}.pass{color:#070}.tok{padding:1px 2px;margin:1px;border-radius:3px}
img{max-width:100%}"""


def _img(png: bytes) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def image_overlays(image: torch.Tensor, maps: dict[str, torch.Tensor], title: str) -> bytes:
    """The input image, then each method's map (absolute, scaled to its max) over it."""
    picture = image.permute(1, 2, 0).numpy()
    picture = picture[:, :, 0] if picture.shape[2] == 1 else np.clip(picture, 0, 1)
    fig = _figure(1.9 * (len(maps) + 1), 2.2)
    axes = fig.subplots(1, len(maps) + 1, squeeze=False)[0]
    axes[0].imshow(picture, cmap="gray" if picture.ndim == 2 else None)
    axes[0].set_title(title, fontsize=8)
    for ax, (name, m) in zip(axes[1:], maps.items()):
        heat = m.abs().sum(0).numpy()
        heat = heat / heat.max() if heat.max() > 0 else heat
        ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None)
        ax.imshow(heat, cmap="inferno", alpha=0.6)
        ax.set_title(name, fontsize=8)
    for ax in axes:
        ax.axis("off")
    return _png(fig)


def feature_bars(values: dict[str, torch.Tensor], names: list[str], title: str, *, top: int = 12) -> bytes:
    """Signed attributions of one table row, the ``top`` largest by integrated gradients."""
    first = next(iter(values.values()))
    order = first.abs().argsort(descending=True)[:top].tolist()[::-1]
    fig = _figure(3.4 * len(values), 0.25 * len(order) + 1.0)
    axes = fig.subplots(1, len(values), squeeze=False)[0]
    for ax, (name, v) in zip(axes, values.items()):
        shown = v[order].numpy()
        ax.barh(range(len(order)), shown, color=["#2f6db5" if s >= 0 else "#c23b3b" for s in shown])
        ax.set_yticks(range(len(order)), [names[i] for i in order], fontsize=7)
        ax.set_title(f"{name}: {title}", fontsize=8)
    return _png(fig)


def token_line(tokens: list[str], scores: torch.Tensor) -> str:
    """Tokens shaded green (for the class) or red (against), by score relative to the largest."""
    top = float(scores.abs().max()) or 1.0
    spans = []
    for tok, s in zip(tokens, scores.tolist()):
        alpha = min(1.0, abs(s) / top)
        color = f"rgba(40,160,60,{alpha:.2f})" if s >= 0 else f"rgba(200,40,40,{alpha:.2f})"
        spans.append(
            f'<span class="tok" style="background:{color}" title="{s:+.4f}">{html.escape(tok)}</span>'
        )
    return "".join(spans)


def example_png(result: RunExplanations) -> bytes | None:
    """The first input's overlays (images) or feature bars (tables), for the model card; None for tokens."""
    maps = {n: m.attributions[0] for n, m in result.methods.items()}
    title = f"#{result.indices[0]}: predicted {result.classes[int(result.predictions[0])]}"
    if result.kind == "image":
        return image_overlays(result.inputs[0], maps, title)
    if result.kind == "table":
        names = result.feature_names or [f"x{j}" for j in range(result.inputs.shape[1])]
        return feature_bars(maps, names, title)
    return None


def render(result: RunExplanations) -> str:
    """The whole page."""
    r = result
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>explanations of {r.run_id}</title>",
        f"<style>{STYLE}</style></head><body><h1>Explanations of run {html.escape(r.run_id)}</h1>",
        f"<p>{len(r.indices)} {r.kind} inputs; methods: {', '.join(r.methods)}.</p>",
    ]
    parts += [f"<p><i>{html.escape(n)}</i></p>" for n in r.notes]
    parts.append("<h2>Sanity check (cascading randomization, Adebayo et al. 2018)</h2>")
    parts.append(
        "<p>Spearman rank correlation of |attributions| with the trained model's after the layers from the "
        "output down to each one are re-drawn at random. A method whose maps stay similar over the cascade "
        "(mean correlation 0.5 or more) explains the input, not the model: it fails.</p>"
    )
    checked = {n: m.sanity for n, m in r.methods.items() if m.sanity is not None}
    if checked:
        parts.append(
            "<table><tr><th>method</th><th>after top layer</th><th>all layers random</th><th>verdict</th></tr>"
        )
        for name, s in checked.items():
            verdict = '<span class="pass">passes</span>' if s.passed else '<span class="fail">FAILS</span>'
            parts.append(
                f"<tr><td>{html.escape(name)}</td><td>{s.correlations[0]:.3f}</td><td>{s.final:.3f}</td>"
                f"<td>{s.score:.3f}</td><td>{verdict}</td></tr>"
            )
        parts.append("</table>")
    ig = r.methods.get("integrated gradients")
    if ig is not None and ig.completeness_error is not None:
        err = ig.completeness_error
        parts.append(
            f"<p>Integrated gradients' completeness error |Σ attributions − (f(x) − f(baseline))|: "
            f"max {float(err.max()):.2e}, mean {float(err.mean()):.2e} (per input below).</p>"
        )
    parts.append("<h2>Inputs</h2>")
    shown = {n: m for n, m in r.methods.items()}
    for i, index in enumerate(r.indices):
        label = (
            r.classes[int(r.labels[i])] if r.labels.dim() == 1 or r.labels.numel() == len(r.indices) else "?"
        )
        pred = r.classes[int(r.predictions[i])]
        title = f"#{index}: label {label}, predicted {pred} ({float(r.confidence[i]):.2f})"
        extra = ""
        if ig is not None and ig.completeness_error is not None:
            extra = f" — IG completeness error {float(ig.completeness_error[i]):.2e}"
        parts.append(f"<h3>{html.escape(title)}{extra}</h3>")
        maps = {n: m.attributions[i] for n, m in shown.items()}
        if r.kind == "image":
            parts.append(_img(image_overlays(r.inputs[i], maps, title)))
        elif r.kind == "table":
            names = r.feature_names or [f"x{j}" for j in range(r.inputs.shape[1])]
            parts.append(_img(feature_bars(maps, names, f"#{index}")))
        else:
            tokens = r.tokens[i] if r.tokens else [str(int(t)) for t in r.inputs[i]]
            for name, m in maps.items():
                parts.append(f"<p><b>{html.escape(name)}</b>: {token_line(tokens, m)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


__all__ = ["example_png", "feature_bars", "image_overlays", "render", "token_line"]
