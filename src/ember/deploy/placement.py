"""Hardware-aware placement: the serving plan measured on this machine, and device maps.

:func:`plan` builds every backend available here (``eager``, ``compiled``, ``bf16``,
``compiled-bf16``, ``int8-dynamic``, ``onnxruntime`` and ``onnxruntime-int8`` on each local ONNX
Runtime execution provider), checks each against the eager model on held-out inputs, then times all
of them at every thread count and batch size, *taking turns in one process* (see
:mod:`ember.deploy.bench`). A backend is chosen only when

- its outputs stay within bounds: fp32 backends (compiled, onnxruntime) within ``atol`` (1e-4) of
  eager; bf16 backends (a bfloat16 copy of the model, ``ember.deploy.quantize.bf16``, float32 in
  and out) within a relative error ``rtol`` (2%: RMS of the difference over RMS of eager's
  outputs, about two significant digits, which is what 8 bits of mantissa keep through a network)
  *and*, on a classifier, within the int8 accuracy bound below; int8 backends lose at most
  ``max_accuracy_drop`` (0.5 point) of accuracy on labelled held-out data, or, without labels,
  agree with eager's top-1 class on all but that fraction;
- it is faster than eager at the same thread count at **every** measured batch size, by at least
  ``min_gain`` (median of per-round ratios), so measurement noise never promotes a backend;
- it meets the budgets: ``memory_mb`` (weights as stored) and ``p99_ms`` (the p99 of one call at the
  chosen ``max_batch`` plus the batching wait ``max_wait_ms``).

Among those, the plan takes the configuration with the highest throughput at its ``max_batch``.
Eager is always a candidate, so a plan never serves something slower than eager. bf16 is measured
on every CPU, not skipped: where the CPU has neither AMX nor AVX512-BF16
(``quantize.bf16_fast_path``) its rejection says so, and the plan's ``machine`` records the path.

The plan is JSON (``plan.json``; the serving app reads ``backend``, ``threads``, ``max_batch`` and
``max_wait_ms``)::

    {"backend": "onnxruntime-int8", "precision": "int8", "threads": 1, "max_batch": 64, "max_wait_ms": 3.1,
     "p50_ms": 6.2, "p99_ms": 7.9, "provider": "CPUExecutionProvider",
     "artifact": "model.int8.onnx", "artifact_sha256": "...", "measurements": [...], "quality": {...}}

:func:`device_map` and :func:`dispatch` split a sequential-of-blocks model over devices by memory
(accelerate-style ``max_memory``) and move activations between them.

(The file is over 600 lines because placement is one decision read top to bottom: build the
backends, check them, time them, choose, and the device maps that place what does not fit one
device; splitting it would scatter that decision across files.)

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> result = plan(model, torch.randn(16, 8), backends=["eager"], threads=(1,), batch_sizes=(1, 4),
    ...               rounds=2, round_s=0.005)
    >>> result.backend, result.max_batch
    ('eager', 4)
    >>> dmap = device_map(model, ["cpu", "cpu"], max_memory={"cpu": 1 << 20})
    >>> sorted(set(dmap.values()))
    ['cpu']
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ember._io import atomic_write_bytes
from ember.deploy import _onnx, bench, quantize
from ember.deploy.serve.backends import plan_digest

BACKENDS = ("eager", "compiled", "bf16", "compiled-bf16", "int8-dynamic", "onnxruntime", "onnxruntime-int8")
FP32_BACKENDS = ("eager", "compiled", "onnxruntime")
BF16_BACKENDS = ("bf16", "compiled-bf16")
STATIC = "onnxruntime-int8-static"  # measured when calibration data is given; served as onnxruntime-int8


class PlanError(ValueError):
    """No configuration meets the budget; the message gives the best that was measured."""


@dataclass
class Plan:
    """The serving plan: what to run, how, and every measurement behind the choice."""

    backend: str
    """One of ``BACKENDS``."""
    threads: int
    """Intra-op threads."""
    max_batch: int
    """Largest batch the server should form."""
    max_wait_ms: float
    """Longest a request waits for a batch to fill."""
    p50_ms: float
    """Median latency of one call at ``max_batch`` (measured)."""
    p99_ms: float
    """p99 latency of one call at ``max_batch`` (measured)."""
    provider: str | None = None
    """ONNX Runtime execution provider, for the onnxruntime backends."""
    quantization: str | None = None
    """``dynamic`` or ``static`` (calibrated) for the int8 backends."""
    precision: str = "fp32"
    """What the served arithmetic is: ``fp32``, ``bf16`` or ``int8``."""
    artifact: str | None = None
    """The file that was measured (ONNX backends), relative to the plan file once saved."""
    artifact_sha256: str | None = None
    reason: str = ""
    """Why this configuration, in one sentence."""
    budget: dict[str, float | None] = field(default_factory=dict)
    measurements: list[dict[str, Any]] = field(default_factory=list)
    """One row per (backend, provider, threads, batch size): p50/p99, ratio to eager, calls."""
    quality: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per backend: max abs error, accuracy (drop) or top-1 agreement, size, whether it passed."""
    rejected: dict[str, str] = field(default_factory=dict)
    """Backend (@threads) → why it was not chosen."""
    machine: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        """Write ``plan.json``; the measured ONNX artifact is copied beside it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.to_dict()
        if self.artifact is not None and Path(self.artifact).is_file():
            source = Path(self.artifact)
            target = path.parent / f"{path.stem}.{source.name}"
            if source.resolve() != target.resolve():
                shutil.copyfile(source, target)
            data["artifact"] = target.name
        data["sha256"] = plan_digest(data)  # load_plan refuses a damaged or edited plan
        atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())
        return path


@dataclass
class _Candidate:
    backend: str  # a BACKENDS name, or STATIC
    threads: int
    run: Callable[[torch.Tensor], Any]
    provider: str | None = None
    artifact: Path | None = None

    @property
    def key(self) -> str:
        return f"{self.backend}@{self.threads}"


def plan(
    model: nn.Module,
    example_batch: bench.Inputs,
    *,
    p99_ms: float | None = None,
    memory_mb: float | None = None,
    backends: Sequence[str] | None = None,
    threads: Sequence[int] = (1, 2),
    batch_sizes: Sequence[int] = (1, 8, 64),
    heldout: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None,
    calibration: torch.Tensor | None = None,
    atol: float = 1e-4,
    rtol: float = 0.02,
    max_accuracy_drop: float = 0.005,
    min_gain: float = 0.05,
    rounds: int = 5,
    round_s: float = 0.1,
    workdir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> Plan:
    """Measure the backends available here and choose the serving configuration.

    Args:
        model: the trained model, tensors in and tensors out (a task's ``export_module``); not modified.
        example_batch: input rows ``(N, ...)``, or a tuple of them for a model of several inputs
            (ONNX backends then are not tried); timing batches are cycled from them.
        p99_ms: latency budget for one request (batch p99 plus the batching wait).
        memory_mb: budget for the weights as stored (int8 stores a quarter of fp32).
        backends: which of ``BACKENDS`` to try (default: all; unavailable ones are skipped).
        threads: intra-op thread counts to try (counts above the CPU count are skipped).
        batch_sizes: batch sizes to time.
        heldout: inputs, or ``(inputs, labels)``, for the accuracy / error checks (default: the
            example batch).
        calibration: training inputs; when given, ONNX Runtime static int8 is tried too.
        atol: largest |output - eager| an fp32 backend may show.
        rtol: largest relative error of a bf16 backend: RMS of (output - eager) over RMS of eager's
            output (0.02: about two significant digits).
        max_accuracy_drop: largest accuracy loss (fraction, 0.005 = 0.5 point) of an int8 or bf16
            backend on a classifier.
        min_gain: a backend must be at least this much faster than eager (0.05: 5%) at every batch size.
        rounds: timing rounds (variants take turns; ratios are medians over rounds).
        round_s: seconds per variant per round per batch size.
        workdir: where ONNX files are written (default: a temporary folder).
        log: called with progress lines (e.g. ``print``).

    Returns:
        The :class:`Plan`.

    Raises:
        PlanError: nothing meets ``p99_ms`` / ``memory_mb`` (the message gives the best measured).
    """
    say = log or (lambda _line: None)
    wanted = list(backends or BACKENDS)
    for name in wanted:
        if name not in BACKENDS:
            raise ValueError(f"unknown backend '{name}'; choose from {', '.join(BACKENDS)}")
    if "eager" not in wanted:
        wanted.insert(0, "eager")  # the baseline every ratio is taken against
    cpus = os.cpu_count() or 1
    thread_counts = sorted({t for t in threads if 0 < t <= cpus}) or [1]
    folder = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="ember-plan-"))
    folder.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    x_check, y_check = _split_heldout(heldout, example_batch)
    rejected: dict[str, str] = {}

    say(f"building {', '.join(wanted)} ({', '.join(map(str, thread_counts))} threads)")
    candidates = _build(model, example_batch, wanted, thread_counts, folder, calibration, rejected)
    quality = _check_quality(model, candidates, x_check, y_check, atol, rtol, max_accuracy_drop)
    for backend, q in quality.items():
        if not q["ok"]:
            rejected[backend] = q["reason"]
    timed = [c for c in candidates if quality[c.backend]["ok"]]

    say(f"timing {len(timed)} configurations at batch sizes {', '.join(map(str, batch_sizes))}")
    rows: list[bench.Latency] = []
    for t in thread_counts:  # one thread count at a time: switching torch's pool per call distorts both
        rows += bench.measure(
            {c.key: c.run for c in timed if c.threads == t},
            example_batch,
            batch_sizes=batch_sizes,
            baseline=f"eager@{t}",
            threads=t,
            rounds=rounds,
            round_s=round_s,
        )
    measurements = _ratios_to_eager(rows, timed)
    choice = _choose(timed, measurements, quality, p99_ms, memory_mb, min_gain, rejected)
    _note_bf16_path(rejected)
    cand, max_batch, wait = choice
    at = _row(measurements, cand.key, max_batch)
    plan_backend = "onnxruntime-int8" if cand.backend == STATIC else cand.backend
    quantization = "static" if cand.backend == STATIC else "dynamic" if "int8" in cand.backend else None
    reason = _reason(cand, measurements, batch_sizes, max_batch, p99_ms)
    artifact_sha = hashlib.sha256(cand.artifact.read_bytes()).hexdigest() if cand.artifact else None
    return Plan(
        backend=plan_backend,
        threads=cand.threads,
        max_batch=max_batch,
        max_wait_ms=round(wait, 3),
        p50_ms=at["p50_ms"],
        p99_ms=at["p99_ms"],
        provider=cand.provider,
        quantization=quantization,
        precision="int8" if quantization else "bf16" if cand.backend in BF16_BACKENDS else "fp32",
        artifact=str(cand.artifact) if cand.artifact else None,
        artifact_sha256=artifact_sha,
        reason=reason,
        budget={
            "p99_ms": p99_ms,
            "memory_mb": memory_mb,
            "max_accuracy_drop": max_accuracy_drop,
            "atol": atol,
            "rtol": rtol,
        },
        measurements=measurements,
        quality=quality,
        rejected=rejected,
        machine=_machine(),
    )


def runner(chosen: Plan | Mapping[str, Any], model: nn.Module, *, folder: str | Path | None = None) -> Any:
    """What the plan ``chosen`` measured, ready to call: ``runner(x) -> outputs``.

    Args:
        chosen: a :class:`Plan`, or the dict of a saved ``plan.json``.
        model: the model the plan was made for.
        folder: where a saved plan's ``artifact`` lies (the plan file's folder).

    Returns:
        The module (eager, compiled, bf16, compiled bf16 or torch int8) or ONNX Runtime runner the
        plan chose, float32 in and out. Torch backends need ``torch.set_num_threads(plan["threads"])``
        in the serving process.
    """
    data = chosen.to_dict() if isinstance(chosen, Plan) else dict(chosen)
    backend, threads = data["backend"], int(data["threads"])
    if backend == "eager":
        return model.eval()
    if backend in ("compiled", "compiled-bf16"):
        source = quantize.bf16(model) if backend == "compiled-bf16" else model.eval()
        with bench.torch_threads(threads):
            return torch.compile(source, dynamic=True)
    if backend == "bf16":
        return quantize.bf16(model)
    if backend == "int8-dynamic":
        return quantize.dynamic_int8(model)
    artifact = Path(data["artifact"])
    if not artifact.is_absolute() and folder is not None:
        artifact = Path(folder) / artifact
    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    if data.get("artifact_sha256") and digest != data["artifact_sha256"]:
        raise ValueError(f"{artifact} has sha256 {digest}, but the plan measured {data['artifact_sha256']}")
    return _onnx.OnnxModule(
        artifact, threads=threads, provider=data.get("provider") or "CPUExecutionProvider"
    )


# --------------------------------------------------------------------------- building


def _build(
    model: nn.Module,
    example: bench.Inputs,
    wanted: list[str],
    thread_counts: list[int],
    folder: Path,
    calibration: torch.Tensor | None,
    rejected: dict[str, str],
) -> list[_Candidate]:
    out = [_Candidate("eager", t, model) for t in thread_counts]
    if "compiled" in wanted:
        try:  # inductor fixes the OpenMP thread count at compile time: one compile per count
            out += [_Candidate("compiled", t, _compiled(model, example, t)) for t in thread_counts]
        except Exception as e:  # no compiler, unsupported op...: reported, not fatal
            rejected["compiled"] = f"torch.compile failed: {_short(e)}"
    bf16_wanted = [b for b in BF16_BACKENDS if b in wanted]
    if bf16_wanted:
        try:
            half = quantize.bf16(model)
            with torch.inference_mode():
                half(*bench.batch_of(example, 2))  # an op without a bf16 kernel fails here, not in timing
        except Exception as e:
            for b in bf16_wanted:
                rejected[b] = f"the model does not run in bfloat16: {_short(e)}"
        else:
            if "bf16" in wanted:
                out += [_Candidate("bf16", t, half) for t in thread_counts]
            if "compiled-bf16" in wanted:
                try:
                    out += [
                        _Candidate("compiled-bf16", t, _compiled(half, example, t)) for t in thread_counts
                    ]
                except Exception as e:
                    rejected["compiled-bf16"] = f"torch.compile failed: {_short(e)}"
    if "int8-dynamic" in wanted:
        try:
            q = quantize.dynamic_int8(model)
            out += [_Candidate("int8-dynamic", t, q) for t in thread_counts]
        except ValueError as e:
            rejected["int8-dynamic"] = str(e)
    onnx_wanted = [b for b in wanted if b.startswith("onnxruntime")]
    if not onnx_wanted:
        return out
    if isinstance(example, tuple):
        for b in onnx_wanted:
            rejected[b] = (
                "the plan's ONNX backends take one input and this model takes several; `ember export "
                "--format onnx` writes and verifies its graph for ONNX Runtime"
            )
        return out
    if not _onnx.available():
        for b in onnx_wanted:
            rejected[b] = "onnx/onnxruntime not installed: pip install 'ember[export]'"
        return out
    fp32 = folder / "model.onnx"
    try:
        _onnx.export(model, example, fp32)
    except Exception as e:  # ExportError, unsupported op...
        for b in onnx_wanted:
            rejected[b] = f"ONNX export failed: {_short(e)}"
        return out
    files: dict[str, Path] = {}
    if "onnxruntime" in wanted:
        files["onnxruntime"] = fp32
    if "onnxruntime-int8" in wanted:
        files["onnxruntime-int8"] = _onnx.quantize_dynamic_file(fp32, folder / "model.int8.onnx")
        if calibration is not None:
            batches = list(calibration.split(64))
            try:
                files[STATIC] = _onnx.quantize_static_file(fp32, folder / "model.static-int8.onnx", batches)
            except Exception as e:  # e.g. an op the static quantizer cannot handle
                rejected[STATIC] = f"static quantization failed: {_short(e)}"
    for provider in _onnx.providers():
        for backend, path in files.items():
            try:  # a graph ONNX Runtime cannot load is reported, not fatal
                out += [
                    _Candidate(
                        backend, t, _onnx.OnnxModule(path, threads=t, provider=provider), provider, path
                    )
                    for t in thread_counts
                ]
            except Exception as e:
                rejected[backend] = f"ONNX Runtime ({provider}) could not load {path.name}: {_short(e)}"
    return out


def _compiled(model: nn.Module, example: bench.Inputs, threads: int) -> Callable[[torch.Tensor], Any]:
    import warnings

    with bench.torch_threads(threads), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = torch.compile(model, dynamic=True)
        with torch.inference_mode():
            compiled(*bench.batch_of(example, 2))  # compile now, not inside the timing
    return compiled


# --------------------------------------------------------------------------- checking


def _split_heldout(
    heldout: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None, example: bench.Inputs
) -> tuple[bench.Inputs, torch.Tensor | None]:
    if heldout is None or isinstance(example, tuple):  # a model of several inputs: checked on its example
        return example, None
    if isinstance(heldout, tuple | list):
        return heldout[0], heldout[1]
    return heldout, None


def _outputs(run: Callable[..., Any], x: bench.Inputs) -> torch.Tensor:
    """The model's (first) output over ``x``, 256 rows at a time."""
    parts = x if isinstance(x, tuple) else (x,)
    with torch.inference_mode():
        return torch.cat(
            [bench.first_output(run(*chunk)).float() for chunk in zip(*(t.split(256) for t in parts))]
        )


def _check_quality(
    model: nn.Module,
    candidates: list[_Candidate],
    x: bench.Inputs,
    y: torch.Tensor | None,
    atol: float,
    rtol: float,
    max_drop: float,
) -> dict[str, dict[str, Any]]:
    reference = _outputs(model, x)
    classify = reference.dim() == 2 and reference.shape[1] > 1
    ref_pred = reference.argmax(1)
    base_acc = float(torch.eq(ref_pred, y).float().mean()) if classify and y is not None else None
    out: dict[str, dict[str, Any]] = {}
    for c in candidates:
        if c.backend in out:
            continue
        got = _outputs(c.run, x)
        same = got.shape == reference.shape
        err = float((got - reference).abs().max()) if same else float("inf")
        q: dict[str, Any] = {
            "max_abs_error": err,
            "relative_error": _relative_error(got, reference) if same else float("inf"),
            "size_mb": bench.size_bytes(c.run) / 2**20,
            "checked_on": len(x[0] if isinstance(x, tuple) else x),
        }
        if classify and got.shape == reference.shape:
            pred = got.argmax(1)
            q["agreement"] = float(torch.eq(pred, ref_pred).float().mean())
            if y is not None:
                q["accuracy"] = float(torch.eq(pred, y).float().mean())
                q["accuracy_drop"] = (base_acc or 0.0) - q["accuracy"]
        if c.backend in FP32_BACKENDS:
            q["ok"] = err <= atol
            q["reason"] = (
                "" if q["ok"] else f"max abs error {err:.3g} > {atol:g} (an fp32 backend must match eager)"
            )
        elif c.backend in BF16_BACKENDS and q["relative_error"] > rtol:
            q["ok"] = False
            q["reason"] = (
                f"relative error {q['relative_error']:.3g} > {rtol:g} (RMS of the difference from eager "
                "over RMS of eager's outputs)"
            )
        elif c.backend in BF16_BACKENDS and not classify:
            q["ok"], q["reason"] = True, ""  # no classes to count: the relative error is the bound
        elif not classify:
            q["ok"], q["reason"] = False, "int8 needs a classifier's (B, K) outputs to check accuracy"
        elif "accuracy_drop" in q:
            q["ok"] = q["accuracy_drop"] <= max_drop
            q["reason"] = (
                ""
                if q["ok"]
                else f"accuracy drops {100 * q['accuracy_drop']:.2f} points > {100 * max_drop:g}"
            )
        else:
            q["ok"] = 1.0 - q["agreement"] <= max_drop
            q["reason"] = (
                ""
                if q["ok"]
                else f"top-1 agrees with eager on {100 * q['agreement']:.2f}% < {100 * (1 - max_drop):g}%"
            )
        out[c.backend] = q
    return out


# --------------------------------------------------------------------------- choosing


def _relative_error(got: torch.Tensor, reference: torch.Tensor) -> float:
    """RMS of ``got - reference`` over RMS of ``reference`` (0 when both are all zeros)."""
    scale = float(reference.double().pow(2).mean().sqrt())
    diff = float((got.double() - reference.double()).pow(2).mean().sqrt())
    return diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))


def _ratios_to_eager(rows: list[bench.Latency], timed: list[_Candidate]) -> list[dict[str, Any]]:
    """Measurement rows; each ratio is to eager at the same thread count and batch size."""
    by_key = {c.key: c for c in timed}
    out = []
    for r in rows:
        c = by_key[r.variant]
        out.append(
            {
                "backend": c.backend,
                "provider": c.provider,
                "threads": c.threads,
                "batch_size": r.batch_size,
                "p50_ms": r.p50_ms,
                "p99_ms": r.p99_ms,
                "ratio_to_eager": r.ratio,
                "ratio_spread": list(r.ratio_spread),
                "calls": r.calls,
            }
        )
    return out


def _row(measurements: list[dict[str, Any]], key: str, batch_size: int) -> dict[str, Any]:
    backend, threads = key.rsplit("@", 1)
    for m in measurements:
        if m["backend"] == backend and m["threads"] == int(threads) and m["batch_size"] == batch_size:
            return m
    raise KeyError(f"no measurement of {key} at batch {batch_size}")


def _choose(
    timed: list[_Candidate],
    measurements: list[dict[str, Any]],
    quality: Mapping[str, Mapping[str, Any]],
    p99_ms: float | None,
    memory_mb: float | None,
    min_gain: float,
    rejected: dict[str, str],
) -> tuple[_Candidate, int, float]:
    best: tuple[float, float, _Candidate, int, float] | None = None
    nearest: tuple[float, str] | None = None
    # eager's best latency at each batch size over the thread counts: a backend that beats eager at
    # its own thread count must not lose to eager at another one
    fastest_eager: dict[int, float] = {}
    for m in measurements:
        if m["backend"] == "eager":
            b = m["batch_size"]
            fastest_eager[b] = min(fastest_eager.get(b, float("inf")), m["p50_ms"])
    for c in timed:
        rows = sorted((m for m in measurements if _matches(m, c)), key=lambda m: m["batch_size"])
        size = quality[c.backend]["size_mb"]
        if memory_mb is not None and size > memory_mb:
            rejected[c.key] = f"weights take {size:.2f} MB > budget {memory_mb:g} MB"
            continue
        if c.backend != "eager":
            slow = [m for m in rows if m["ratio_to_eager"] > 1.0 - min_gain]
            if slow:
                rejected[c.key] = "not faster than eager here: " + ", ".join(
                    f"{m['ratio_to_eager']:.2f}x eager's latency at batch {m['batch_size']}" for m in slow
                )
                continue
            behind = [m for m in rows if m["p50_ms"] > (1.0 - min_gain) * fastest_eager[m["batch_size"]]]
            if behind:
                rejected[c.key] = "not faster than eager at its best thread count: " + ", ".join(
                    f"p50 {m['p50_ms']:.3f} ms vs {fastest_eager[m['batch_size']]:.3f} ms at batch {m['batch_size']}"
                    for m in behind
                )
                continue
        fits = [m for m in rows if p99_ms is None or m["p99_ms"] <= p99_ms]
        if not fits:
            if nearest is None or rows[0]["p99_ms"] < nearest[0]:
                nearest = (rows[0]["p99_ms"], f"{c.key} at batch {rows[0]['batch_size']}")
            rejected[c.key] = (
                f"p99 {rows[0]['p99_ms']:.2f} ms at batch {rows[0]['batch_size']} > budget {p99_ms:g} ms"
            )
            continue
        if p99_ms is None:  # the batch size with the best throughput
            top = min(fits, key=lambda m: m["p50_ms"] / m["batch_size"])
            wait = top["p50_ms"] / 2
        else:  # the largest batch that fits, waiting at most half a batch's time within the slack
            top = fits[-1]
            wait = min(p99_ms - top["p99_ms"], top["p50_ms"] / 2)
        per_example = top["p50_ms"] / top["batch_size"]
        key = (per_example, rows[0]["p99_ms"], c, top["batch_size"], wait)
        if best is None or key[:2] < best[:2]:
            best = key
    if best is None:
        detail = f"; the fastest was {nearest[1]} with p99 {nearest[0]:.2f} ms" if nearest else ""
        limits = []
        if p99_ms is not None:
            limits.append(f"p99 <= {p99_ms:g} ms")
        if memory_mb is not None:
            limits.append(f"weights <= {memory_mb:g} MB")
        raise PlanError(
            f"no configuration meets the budget ({', '.join(limits) or 'none given'}){detail}. "
            "Relax the budget, try int8 backends or more threads, or use a smaller model"
        )
    return best[2], best[3], best[4]


def _note_bf16_path(rejected: dict[str, str]) -> None:
    """Say why bf16 lost where the CPU has no native bf16 (measured anyway: the numbers decide)."""
    if quantize.bf16_fast_path() is not None:
        return
    for key, why in rejected.items():
        if key.split("@")[0] in BF16_BACKENDS and why.startswith("not faster"):
            rejected[key] = f"{why} (this CPU has neither AMX nor AVX512-BF16: bf16 runs emulated)"


def _matches(m: Mapping[str, Any], c: _Candidate) -> bool:
    return m["backend"] == c.backend and m["threads"] == c.threads and m["provider"] == c.provider


def _reason(
    c: _Candidate,
    measurements: list[dict[str, Any]],
    batch_sizes: Iterable[int],
    max_batch: int,
    budget: float | None,
) -> str:
    ratios = ", ".join(
        f"{_row(measurements, c.key, b)['ratio_to_eager']:.2f}x eager's latency at batch {b}"
        for b in batch_sizes
    )
    what = "eager: no other backend was faster at every batch size within the accuracy bound"
    if c.backend != "eager":
        what = f"{c.backend} with {c.threads} thread(s): {ratios}"
    limit = f"the largest batch within p99 {budget:g} ms" if budget is not None else "the best throughput"
    return f"{what}; max_batch {max_batch} gives {limit}"


def _machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "bf16": quantize.bf16_fast_path() or "emulated",
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


# --------------------------------------------------------------------------- device maps


def _blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    if not isinstance(model, nn.Sequential):
        raise TypeError(
            f"device_map splits an nn.Sequential of blocks; got {type(model).__name__}. "
            "Wrap the model's stages in nn.Sequential (e.g. nn.Sequential(stem, *blocks, head))"
        )
    return list(model.named_children())


def _nbytes(module: nn.Module) -> int:
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def _parse_bytes(value: int | float | str) -> int:
    if isinstance(value, int | float):
        return int(value)
    text = value.strip().upper().replace(" ", "")
    for unit, scale in (
        ("GIB", 2**30),
        ("MIB", 2**20),
        ("KIB", 2**10),
        ("GB", 10**9),
        ("MB", 10**6),
        ("KB", 10**3),
        ("B", 1),
    ):
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * scale)
    return int(float(text))


def device_map(
    model: nn.Module, devices: Sequence[str | torch.device], *, max_memory: Mapping[str, int | float | str]
) -> dict[str, str]:
    """Assign the blocks of an ``nn.Sequential`` to ``devices`` in order, filling each up to its budget.

    Args:
        model: an ``nn.Sequential`` whose children are the blocks (a block is never split).
        devices: the devices in pipeline order, e.g. ``["cuda:0", "cuda:1", "cpu"]``. The same
            device may appear more than once (CPU stand-ins in tests).
        max_memory: bytes (or ``"2GiB"`` / ``"500MB"``) of weights per device name; a device missing
            from it has no limit.

    Returns:
        ``{block name: device}`` for every block, in order.

    Raises:
        ValueError: the blocks do not fit (the message names the block and the space left).
    """
    if not devices:
        raise ValueError("device_map needs at least one device")
    blocks = _blocks(model)
    limits = {str(k): _parse_bytes(v) for k, v in max_memory.items()}
    names = [str(d) for d in devices]
    used = [0] * len(names)
    out: dict[str, str] = {}
    i = 0
    for name, block in blocks:
        need = _nbytes(block)
        while i < len(names) and used[i] + need > limits.get(names[i], 1 << 62):
            i += 1
        if i == len(names):
            room = ", ".join(f"{d}: {limits.get(d, 0) - u} B free" for d, u in zip(names, used))
            raise ValueError(
                f"block '{name}' needs {need} B of weights and no device has room left ({room}); "
                "raise max_memory or add devices"
            )
        used[i] += need
        out[name] = names[i]
    return out


class Dispatched(nn.Module):
    """An ``nn.Sequential`` whose blocks live on different devices; activations follow them.

    The output is moved back to the device the input came from.
    """

    def __init__(self, blocks: nn.Sequential, devices: Sequence[torch.device]) -> None:
        super().__init__()
        self.blocks = blocks
        self.devices = list(devices)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        source = x.device
        for block, device in zip(self.blocks, self.devices):
            x = block(x.to(device, non_blocking=True))
        return x.to(source)


def dispatch(model: nn.Module, device_map: Mapping[str, str]) -> Dispatched:
    """Move each block of ``model`` to its device in ``device_map`` and return the pipelined model.

    Args:
        model: the ``nn.Sequential`` that :func:`device_map` was computed for (moved in place).
        device_map: ``{block name: device}`` covering every block.

    Returns:
        A :class:`Dispatched` module computing ``model(x)`` across the devices.
    """
    blocks = _blocks(model)
    missing = [name for name, _ in blocks if name not in device_map]
    if missing:
        raise ValueError(f"device_map has no device for block(s) {', '.join(missing)}")
    devices = []
    for name, block in blocks:
        device = torch.device(device_map[name])
        block.to(device)
        devices.append(device)
    assert isinstance(model, nn.Sequential)
    return Dispatched(model, devices)


__all__ = ["BACKENDS", "Dispatched", "Plan", "PlanError", "device_map", "dispatch", "plan", "runner"]
