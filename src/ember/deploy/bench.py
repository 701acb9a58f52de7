"""Latency measurement: p50/p99 per batch size, variants taking turns, ratios to a baseline.

On a shared machine absolute timings drift with other processes' load, so every comparison here
is made the way the benchmarks make it: the variants take turns in one process, round after
round, the order rotated each round, and a variant's speed relative to the baseline is the
**median of per-round ratios** (load moves numerator and denominator of one round together).
p50 and p99 are over every single call of every round (nearest rank; with fewer than 100 calls
p99 is close to the maximum, and says so by ``calls``).

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Linear(8, 4).eval()
    >>> rows = measure({"eager": model, "half": lambda x: model(x)}, torch.randn(64, 8),
    ...                batch_sizes=(1, 64), rounds=3, round_s=0.01)
    >>> sorted({r.variant for r in rows}), [r.batch_size for r in rows if r.variant == "eager"]
    (['eager', 'half'], [1, 64])
"""

from __future__ import annotations

import contextlib
import io
import math
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

Runner = Callable[..., Any]


@dataclass
class Latency:
    """Latency of one variant at one batch size (and thread count)."""

    variant: str
    batch_size: int
    threads: int
    p50_ms: float
    """Median latency of one call, in milliseconds."""
    p99_ms: float
    """99th percentile (nearest rank) of one call's latency."""
    mean_ms: float
    calls: int
    """Timed calls behind p50/p99."""
    ratio: float
    """Median over rounds of (this variant's round median / the baseline's); 1.0 for the baseline."""
    ratio_spread: tuple[float, float]
    """Smallest and largest per-round ratio, to show how much rounds disagreed."""
    round_ms: list[float]
    """This variant's median latency in each round (for ratios against any other variant)."""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ratio_spread"] = list(self.ratio_spread)
        return out


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile ``q`` in [0, 100] of ``values``."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` inside the block (None or 0: unchanged)."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def batch_of(example: Inputs, batch_size: int) -> tuple[torch.Tensor, ...]:
    """The model's arguments for ``batch_size`` rows cycled from ``example`` (a tensor, or a tuple of
    them for a model of several inputs); contiguous, so no variant pays a copy."""
    parts = example if isinstance(example, tuple) else (example,)
    reps = math.ceil(batch_size / len(parts[0]))
    return tuple(t.repeat(reps, *([1] * (t.dim() - 1)))[:batch_size].contiguous() for t in parts)


Inputs = torch.Tensor | tuple[torch.Tensor, ...]
"""One input tensor ``(N, ...)``, or the tuple of a model's several inputs (a translator's source
and target), each ``(N, ...)``."""


def measure(
    variants: Mapping[str, Runner],
    example: Inputs,
    *,
    batch_sizes: Sequence[int] = (1, 64),
    baseline: str | None = None,
    rounds: int = 5,
    round_s: float = 0.2,
    warmup: int = 2,
    threads: int | None = None,
    max_calls: int = 400,
) -> list[Latency]:
    """Time every variant at every batch size, taking turns.

    Args:
        variants: name → callable taking a batch (an ``nn.Module`` or anything like it). Modules
            are called under ``torch.inference_mode``.
        example: input rows ``(N, ...)`` (or a tuple of them, one per model input); batches are
            cycled from them.
        batch_sizes: the batch sizes to time.
        baseline: the variant ratios are taken against (default: the first).
        rounds: rounds of turns (the order rotated each round); ratios are medians over rounds.
        round_s: target seconds per variant per round (calls per round are sized from warm-up).
        warmup: untimed calls per variant and batch size before the rounds.
        threads: torch intra-op threads while timing (None: unchanged). ONNX Runtime sessions
            carry their own thread count.
        max_calls: most timed calls per variant per round.

    Returns:
        One :class:`Latency` per (variant, batch size), in the order of ``variants``.
    """
    names = list(variants)
    if not names:
        raise ValueError("measure() needs at least one variant")
    base = baseline or names[0]
    if base not in variants:
        raise ValueError(f"baseline '{base}' is not one of the variants: {', '.join(names)}")
    out: list[Latency] = []
    with torch_threads(threads), torch.inference_mode():
        for bs in batch_sizes:
            x = batch_of(example, bs)
            calls: dict[str, int] = {}
            for name in names:
                start = time.perf_counter()
                for _ in range(max(1, warmup)):
                    variants[name](*x)
                per_call = (time.perf_counter() - start) / max(1, warmup)
                calls[name] = int(min(max_calls, max(3, round_s / max(per_call, 1e-6))))
            samples: dict[str, list[float]] = {n: [] for n in names}
            medians: dict[str, list[float]] = {n: [] for n in names}
            for r in range(rounds):
                order = names[r % len(names) :] + names[: r % len(names)]
                for name in order:
                    run, times = variants[name], []
                    for _ in range(calls[name]):
                        t0 = time.perf_counter()
                        run(*x)
                        times.append(time.perf_counter() - t0)
                    samples[name] += times
                    medians[name].append(statistics.median(times))
            for name in names:
                ratios = [a / b for a, b in zip(medians[name], medians[base])]
                ms = [t * 1e3 for t in samples[name]]
                out.append(
                    Latency(
                        variant=name,
                        batch_size=bs,
                        threads=threads or torch.get_num_threads(),
                        p50_ms=statistics.median(ms),
                        p99_ms=percentile(ms, 99),
                        mean_ms=statistics.fmean(ms),
                        calls=len(ms),
                        ratio=statistics.median(ratios),
                        ratio_spread=(min(ratios), max(ratios)),
                        round_ms=[t * 1e3 for t in medians[name]],
                    )
                )
    return out


def size_bytes(model: Any) -> int:
    """Bytes the model takes as stored: its ONNX file (``onnx_bytes``) or its serialized state dict.

    Quantized modules keep packed weights outside plain tensors, so the state dict is serialized
    (``torch.save`` into memory) rather than summed; zeros left by magnitude pruning still count.
    """
    stored = getattr(model, "onnx_bytes", None)
    if isinstance(stored, int):
        return stored
    if not isinstance(model, nn.Module):
        raise TypeError(f"size_bytes needs an nn.Module or an ONNX runner, got {type(model).__name__}")
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


@dataclass
class Comparison:
    """One variant of a model against the baseline: its score on the protected metric, size,
    latency, and the verdict."""

    variant: str
    score: float | None
    """The protected metric on the held-out data (top-1 accuracy for labelled classifier inputs; the
    task's metric when the caller scores variants itself); None when not scored."""
    drop: float | None
    """How much worse than the baseline's score (baseline minus this for a metric to maximize, this
    minus baseline for one to minimize; 0.005 is half a point of accuracy)."""
    max_abs_error: float
    """Largest |output - baseline output| over the inputs."""
    size_bytes: int
    latency: dict[int, Latency]
    """Batch size → latency (ratios against the baseline)."""
    pareto: bool = False
    """No other variant is at least as good on accuracy, size and every latency, and better on one."""
    faster: bool = False
    """Faster than the baseline at every measured batch size, by at least ``min_gain``."""
    verdict: str = ""
    metric: str = "accuracy"
    """What ``score`` is."""
    mode: str = "max"
    """Whether a higher (max) or a lower (min) ``score`` is better."""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["latency"] = {str(b): lat.to_dict() for b, lat in self.latency.items()}
        return out


def compare(
    variants: Mapping[str, Any],
    x: Inputs,
    y: torch.Tensor | None = None,
    *,
    scores: Mapping[str, float | None] | None = None,
    metric: str = "accuracy",
    mode: str = "max",
    baseline: str | None = None,
    batch_sizes: Sequence[int] = (1, 64),
    threads: int | None = 1,
    rounds: int = 5,
    round_s: float = 0.2,
    max_drop: float = 0.005,
    min_gain: float = 0.05,
) -> list[Comparison]:
    """Accuracy, size and latency of every variant, the Pareto front, and an honest verdict each.

    A variant is called **better** only when it is faster than the baseline at every batch size
    (median per-round ratio at most ``1 - min_gain``) *and* loses at most ``max_drop`` accuracy; a
    smaller or sparser variant that is not faster on this machine is said to be so.

    Args:
        variants: name → model (``nn.Module`` or an ONNX runner); the baseline among them.
        x: held-out inputs ``(N, ...)``, or a tuple of them for a model of several inputs (outputs
            are compared on all of them; timing batches cycle them).
        y: their labels, or None (then only the error against the baseline is reported).
        scores: each variant's score on ``metric``, computed by the caller (the task's own
            evaluation); replaces the top-1 accuracy from ``y``.
        metric, mode: what ``scores`` are, and whether higher (max) or lower (min) is better.
        baseline: the reference variant (default: the first).
        batch_sizes, threads, rounds, round_s: see :func:`measure`.
        max_drop: largest loss on the metric a "better" variant may have (0.005: half a point of
            accuracy).
        min_gain: smallest speed-up (fraction of latency saved) that counts as faster.

    Returns:
        One :class:`Comparison` per variant, in the order given.
    """
    names = list(variants)
    base = baseline or names[0]
    parts = x if isinstance(x, tuple) else (x,)
    outputs = {}
    with torch_threads(threads), torch.inference_mode():
        for name in names:
            run = variants[name]
            chunks = zip(*(t.split(256) for t in parts))
            outputs[name] = torch.cat([first_output(run(*chunk)).float() for chunk in chunks])
    rows = measure(
        variants, x, batch_sizes=batch_sizes, baseline=base, threads=threads, rounds=rounds, round_s=round_s
    )
    reference = outputs[base]
    score = dict(scores) if scores is not None else {n: _accuracy(outputs[n], y) for n in names}
    if scores is None:
        metric, mode = "accuracy", "max"
    sign = 1.0 if mode == "max" else -1.0
    base_score = score.get(base)
    out = []
    for name in names:
        got = score.get(name)
        same = outputs[name].shape == reference.shape
        out.append(
            Comparison(
                variant=name,
                score=got,
                drop=None if got is None or base_score is None else sign * (base_score - got),
                metric=metric,
                mode=mode,
                max_abs_error=float((outputs[name] - reference).abs().max()) if same else float("inf"),
                size_bytes=size_bytes(variants[name]),
                latency={r.batch_size: r for r in rows if r.variant == name},
            )
        )
    base_size = next(c.size_bytes for c in out if c.variant == base)
    for c in out:
        c.pareto = not any(_dominates(o, c) for o in out if o is not c)
        c.faster = c.variant != base and all(lat.ratio <= 1.0 - min_gain for lat in c.latency.values())
        c.verdict = _verdict(c, base, base_size, max_drop)
    return out


def first_output(out: Any) -> torch.Tensor:
    """A model's first output tensor (a detector answers several maps)."""
    while isinstance(out, tuple | list):
        out = out[0]
    return torch.as_tensor(out)


def _accuracy(logits: torch.Tensor, y: torch.Tensor | None) -> float | None:
    if y is None or logits.dim() != 2 or logits.shape[1] < 2:
        return None
    return float((logits.argmax(1) == y).float().mean())


def _dominates(a: Comparison, b: Comparison) -> bool:
    """``a`` is at least as good as ``b`` everywhere and better somewhere (score, size, p50s)."""
    pairs = [(a.drop or 0.0, b.drop or 0.0), (a.size_bytes, b.size_bytes)]
    pairs += [(a.latency[k].p50_ms, b.latency[k].p50_ms) for k in a.latency if k in b.latency]
    return all(p <= q for p, q in pairs) and any(p < q for p, q in pairs)


def _verdict(c: Comparison, base: str, base_size: int, max_drop: float) -> str:
    if c.variant == base:
        return "baseline"
    ratios = ", ".join(f"x{lat.ratio:.2f} at batch {b}" for b, lat in c.latency.items())
    smaller = base_size / max(1, c.size_bytes)
    size = (
        f"{smaller:.1f}x smaller"
        if smaller >= 1.05
        else "same size"
        if smaller > 0.95
        else f"{1 / smaller:.1f}x larger"
    )
    points = c.metric in ("accuracy",) or c.metric.endswith(("accuracy", "_macro", "map", "iou"))
    change = None if c.drop is None else (-c.drop if c.mode == "max" else c.drop)  # the metric's own change
    drop = (
        "" if change is None else (f", {100 * change:+.1f} pt" if points else f", {c.metric} {change:+.4g}")
    )
    if not c.faster:
        return f"not faster here (latency {ratios}); {size}{drop}"
    if c.drop is not None and c.drop > max_drop:
        lost = f"{100 * c.drop:.1f} pt" if points else f"{c.drop:.4g} of {c.metric}"
        return f"faster (latency {ratios}) but loses {lost}; {size}"
    return f"better: latency {ratios}; {size}{drop}"


__all__ = [
    "Comparison",
    "Inputs",
    "Latency",
    "compare",
    "first_output",
    "Runner",
    "batch_of",
    "measure",
    "percentile",
    "size_bytes",
    "torch_threads",
]
