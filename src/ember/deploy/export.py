"""Export a model to ONNX or ``torch.export``, and prove the export computes what the model does.

Every export is checked before it is kept: the exported file is loaded back (ONNX in ONNX Runtime,
``.pt2`` with ``torch.export.load``) and run on the example batch and on other batch sizes (the batch
axis is dynamic by default); the largest absolute difference from the eager model is measured and
reported, and an export over ``atol`` raises :class:`ExportError` and leaves no file behind.

``onnx``, ``onnxscript`` and ``onnxruntime`` are optional (``pip install 'ember[export]'``) and
imported only here, inside the functions.

Example:
    >>> import torch, tempfile
    >>> from ember.models import create
    >>> model = create("mlp_tiny", in_channels=1, image_size=8)
    >>> report = export_onnx(model, torch.rand(4, 1, 8, 8), tempfile.mkdtemp() + "/m.onnx")  # doctest: +SKIP
    >>> report.max_abs_error <= 1e-4  # doctest: +SKIP
    True
"""

from __future__ import annotations

import hashlib
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ember._io import atomic_path, require
from ember.tasks.spec import ModelSpec

FORMATS = ("onnx", "torch-export")
ONNX_SINGLE_FILE_LIMIT = 1 << 30  # weights above this go to a side file (protobuf caps a file at 2 GiB)
_EXPORTER_NOTES = (
    r".*The tensor attributes .* were assigned during export",
    r".*The axis name: .* will not be used",
)


class ExportError(ValueError):
    """An export that failed its check against the eager model, or could not be made."""


@dataclass
class ExportReport:
    """What an export wrote and how closely it matches the eager model."""

    format: str
    """``onnx`` or ``torch-export``."""
    path: Path
    """The exported file."""
    sha256: str
    """sha256 of the exported file."""
    size: int
    """Bytes of the exported file (plus its external-data file, if any)."""
    max_abs_error: float
    """Largest |exported - eager| over every checked batch and output element."""
    atol: float
    """The tolerance it was checked against."""
    batch_sizes: tuple[int, ...]
    """Batch sizes the export was run on (more than one when the batch axis is dynamic)."""
    dynamic_batch: bool
    """Whether the batch axis is symbolic in the exported graph."""
    seconds: float
    """Export plus verification time."""
    opset: int | None = None
    """The ONNX opset (ONNX only)."""
    dynamic_sequence: bool = False
    """Whether the length of token inputs is symbolic too (checked on shorter inputs)."""
    inputs: tuple[str, ...] = ("input",)
    """The graph's input names, one per model argument."""

    def summary(self) -> str:
        """One line for logs and the CLI."""
        return (
            f"{self.format} {self.path} ({self.size / 1024:.1f} KiB, sha256 {self.sha256[:12]}): "
            f"max abs error {self.max_abs_error:.3g} <= {self.atol:g} on batch sizes "
            f"{', '.join(map(str, self.batch_sizes))}"
            + (", shorter sequences too" if self.dynamic_sequence else "")
            + (f", opset {self.opset}" if self.opset else "")
        )


Inputs = tuple[torch.Tensor, ...]


def export_onnx(
    model: nn.Module,
    example: torch.Tensor | Sequence[torch.Tensor],
    path: str | Path,
    *,
    dynamic_batch: bool = True,
    dynamic_sequence: bool = True,
    checks: Sequence[Sequence[torch.Tensor]] | None = None,
    atol: float = 1e-4,
    opset: int | None = None,
    input_name: str = "input",
    output_name: str = "output",
    metadata: dict[str, str] | None = None,
) -> ExportReport:
    """Export ``model`` to ONNX (torch's dynamo exporter) and verify it in ONNX Runtime.

    Args:
        model: the model; exported in eval mode (its mode is restored afterwards).
        example: an input batch ``(B, ...)`` on the model's device, or a tuple of them (one per
            model argument).
        path: the ``.onnx`` file to write (replaced atomically, only once verified).
        dynamic_batch: make the batch axis symbolic and check other batch sizes too.
        dynamic_sequence: also make the length of every ``(B, T)`` integer input (token ids)
            symbolic, up to the example's ``T`` (falls back to a fixed length when the model cannot
            trace with it; the report says which).
        checks: input tuples the export is verified on (default: the example, its first row, and
            ``B + 3`` fresh rows in the example's value range; token inputs also cut shorter).
        atol: the largest absolute difference from eager outputs that passes (1e-4 for fp32).
        opset: the ONNX opset (default: the exporter's).
        input_name: the graph input's name (``input_1`` ... for further inputs).
        output_name: the graph output's name (``output_1`` ... for further outputs).
        metadata: strings stored in the model's ``metadata_props`` (e.g. the bundle's sha256).

    Returns:
        The :class:`ExportReport`.

    Raises:
        ExportError: the exported graph differs from the model by more than ``atol``, or the
            exporter cannot trace the model (the message says why, in one line).
        ImportError: onnx / onnxscript / onnxruntime missing, with the pip line to run.
    """
    onnx = require("onnx", "export", what="ONNX export")
    require("onnxscript", "export", what="ONNX export")
    ort = require("onnxruntime", "export", what="ONNX export")
    started = time.perf_counter()
    path = Path(path)
    args = _as_inputs(example, dynamic_batch)
    names = _names(input_name, len(args))
    with _eval(model), torch.no_grad():
        outputs = _flat(model(*args))
        out_names = _names(output_name, len(outputs))

        def trace(sequence: bool) -> Any:
            return torch.onnx.export(
                model,
                args,
                input_names=names,
                output_names=out_names,
                dynamic_shapes=_dynamic_shapes(args, dynamic_batch, sequence),
                opset_version=opset,
                dynamo=True,
                verbose=False,
            )

        program, sequence = _traced(model, trace, args, dynamic_sequence)
        if program is None:  # only the legacy TorchScript exporter returns None
            raise ExportError("torch.onnx.export returned no program")
        proto = program.model_proto
        for key, value in (metadata or {}).items():
            proto.metadata_props.add(key=key, value=str(value))
        big = sum(p.numel() * p.element_size() for p in model.parameters()) > ONNX_SINGLE_FILE_LIMIT
        with _staged(path, direct=big) as tmp:
            if big:
                onnx.save_model(proto, str(tmp), save_as_external_data=True, location=path.name + ".data")
            else:
                onnx.save_model(proto, str(tmp))
            options = ort.SessionOptions()
            options.log_severity_level = 3  # errors only (shape-inference notices are not for users)
            session = ort.InferenceSession(str(tmp), options, providers=["CPUExecutionProvider"])
            batch_dim = session.get_inputs()[0].shape[0]

            def run(*xs: torch.Tensor) -> list[torch.Tensor]:
                feed = {name: x.detach().cpu().contiguous().numpy() for name, x in zip(names, xs)}
                return [torch.from_numpy(o) for o in session.run(None, feed)]

            batches = _checks(args, checks, dynamic_batch, sequence)
            error = _verify(model, batches, run, atol, "ONNX Runtime")
            if dynamic_batch and isinstance(batch_dim, int):
                raise ExportError(f"the ONNX graph's batch axis is fixed at {batch_dim}, not dynamic")
    opset_found = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return _report("onnx", path, error, atol, batches, dynamic_batch, started, opset_found, sequence, names)


def export_torch(
    model: nn.Module,
    example: torch.Tensor | Sequence[torch.Tensor],
    path: str | Path,
    *,
    dynamic_batch: bool = True,
    dynamic_sequence: bool = True,
    checks: Sequence[Sequence[torch.Tensor]] | None = None,
    atol: float = 1e-4,
) -> ExportReport:
    """Export ``model`` with ``torch.export`` to a ``.pt2`` file, load it back and verify it.

    The ``.pt2`` archive is torch's own format (``torch.export.save``); its tensors are read back
    with torch's weights-only loader. Arguments as :func:`export_onnx`.

    Returns:
        The :class:`ExportReport`.
    """
    started = time.perf_counter()
    path = Path(path)
    args = _as_inputs(example, dynamic_batch)
    with _eval(model), torch.no_grad():

        def trace(sequence: bool) -> Any:
            return torch.export.export(
                model, args, dynamic_shapes=_dynamic_shapes(args, dynamic_batch, sequence)
            )

        program, sequence = _traced(model, trace, args, dynamic_sequence)
        with _staged(path) as tmp:
            torch.export.save(program, str(tmp))
            with _quiet_exporter():
                loaded = torch.export.load(str(tmp)).module()

            def run(*xs: torch.Tensor) -> list[torch.Tensor]:
                return _flat(loaded(*xs))

            batches = _checks(args, checks, dynamic_batch, sequence)
            error = _verify(model, batches, run, atol, "the loaded torch.export program")
    names = _names("input", len(args))
    return _report("torch-export", path, error, atol, batches, dynamic_batch, started, None, sequence, names)


# --------------------------------------------------------------------------- helpers


def _as_inputs(example: torch.Tensor | Sequence[torch.Tensor], dynamic_batch: bool) -> Inputs:
    args = (example,) if isinstance(example, torch.Tensor) else tuple(example)
    if not args or not all(isinstance(a, torch.Tensor) for a in args):
        raise ExportError("the example must be a tensor or a tuple of tensors (one per model argument)")
    # torch.export specializes a size-1 dimension to the constant 1, so a dynamic batch needs B >= 2
    return tuple(_batch_of_two(a) for a in args) if dynamic_batch else args


def _names(first: str, n: int) -> list[str]:
    return [first] + [f"{first}_{i}" for i in range(1, n)]


def _is_sequence(x: torch.Tensor) -> bool:
    """A ``(B, T)`` integer input (token ids), whose length may vary."""
    return x.dim() == 2 and not x.is_floating_point() and x.shape[1] > 1


def _dynamic_shapes(args: Inputs, batch: bool, sequence: bool) -> tuple[dict[int, Any], ...] | None:
    """The batch axis shared by every input; each token input's length its own axis (up to its T)."""
    if not batch and not sequence:
        return None
    dim = torch.export.Dim
    batch_dim = dim("batch", min=1, max=1 << 20)
    shapes: list[dict[int, Any]] = []
    for i, x in enumerate(args):
        axes: dict[int, Any] = {0: batch_dim} if batch else {}
        if sequence and _is_sequence(x):
            axes[1] = dim(f"sequence_{i}" if i else "sequence", min=1, max=int(x.shape[1]))
        shapes.append(axes)
    return tuple(shapes)


def _traced(
    model: nn.Module, trace: Callable[[bool], Any], args: Inputs, dynamic_sequence: bool
) -> tuple[Any, bool]:
    """The exporter's program, with dynamic token lengths when the model traces with them."""
    sequence = dynamic_sequence and any(_is_sequence(a) for a in args)
    with _quiet_exporter():
        if sequence:
            try:
                return trace(True), True
            except Exception:
                pass
        try:
            return trace(False), False
        except Exception as e:
            first = (str(e).strip().splitlines() or [""])[0][:300]
            raise ExportError(
                f"the exporter cannot trace {type(model).__name__}: {type(e).__name__}: {first}"
            ) from None


def _checks(
    example: Inputs, given: Sequence[Sequence[torch.Tensor]] | None, dynamic_batch: bool, sequence: bool
) -> list[Inputs]:
    """The input tuples an export is verified on (see :func:`export_onnx`'s ``checks``); with a
    dynamic sequence, the last one again with its token inputs cut to half their length."""
    if given is not None:
        batches = [tuple(c) for c in given]
    elif not dynamic_batch:
        batches = [example]
    else:
        g = torch.Generator().manual_seed(0)
        extra = len(example[0]) + 3
        fresh = []
        for x in example:
            lo, hi = x.min(), x.max()
            if x.is_floating_point():
                more = lo + (hi - lo) * torch.rand((extra, *x.shape[1:]), generator=g)
            else:
                more = torch.randint(int(lo), int(hi) + 1, (extra, *x.shape[1:]), generator=g)
            fresh.append(more.to(x.device, x.dtype))
        batches = [tuple(x[:1] for x in example), example, tuple(fresh)]
    if sequence:
        batches.append(tuple(x[:, : max(1, x.shape[1] // 2)] if _is_sequence(x) else x for x in batches[-1]))
    return batches


def _verify(
    model: nn.Module,
    batches: Sequence[Inputs],
    run: Callable[..., list[torch.Tensor]],
    atol: float,
    where: str,
) -> float:
    """Max |exported - eager| over every input tuple of ``batches``."""
    worst = 0.0
    for xs in batches:
        want = [o.detach().cpu().float() for o in _flat(model(*xs))]
        got = [o.detach().cpu().float() for o in run(*xs)]
        if len(want) != len(got) or any(a.shape != b.shape for a, b in zip(want, got)):
            raise ExportError(
                f"{where} returned shapes {[tuple(o.shape) for o in got]} for inputs of shapes "
                f"{[tuple(x.shape) for x in xs]}; the model returns {[tuple(o.shape) for o in want]}"
            )
        worst = max([worst] + [(a - b).abs().max().item() for a, b in zip(want, got) if a.numel()])
    if not worst <= atol:  # also catches NaN
        raise ExportError(
            f"{where} differs from the eager model by up to {worst:.3g} (tolerance {atol:g}); "
            "the export does not compute what the model computes"
        )
    return worst


def _report(
    fmt: str,
    path: Path,
    error: float,
    atol: float,
    batches: Sequence[Inputs],
    dynamic: bool,
    started: float,
    opset: int | None,
    sequence: bool,
    inputs: Sequence[str],
) -> ExportReport:
    data = path.read_bytes()
    side = path.with_name(path.name + ".data")
    size = len(data) + (side.stat().st_size if side.is_file() else 0)
    return ExportReport(
        format=fmt,
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        size=size,
        max_abs_error=error,
        atol=atol,
        batch_sizes=tuple(dict.fromkeys(len(b[0]) for b in batches)),
        dynamic_batch=dynamic,
        seconds=time.perf_counter() - started,
        opset=opset,
        dynamic_sequence=sequence,
        inputs=tuple(inputs),
    )


def _flat(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, list | tuple) and all(isinstance(o, torch.Tensor) for o in out):
        return list(out)
    raise ExportError(
        f"can only export models returning tensors (or tuples of them), got {type(out).__name__}"
    )


def _batch_of_two(example: torch.Tensor) -> torch.Tensor:
    # torch.export specializes a size-1 dimension to the constant 1, so a dynamic batch needs B >= 2
    return example if len(example) > 1 else example.repeat(2, *([1] * (example.dim() - 1)))


@contextmanager
def _eval(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextmanager
def _staged(path: Path, *, direct: bool = False) -> Iterator[Path]:
    """A temporary file next to ``path``, renamed over it only when the block succeeds.

    ``direct`` (ONNX with external weights, whose side file is named after the final file) writes
    ``path`` itself, and removes it and its side file when the block fails.
    """
    if not direct:
        with atomic_path(path) as tmp:
            yield tmp
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".data").unlink(missing_ok=True)
        raise


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence torch's exporter internals: deprecations inside torch a user cannot act on, and its
    per-op log lines (e.g. "torchvision is not installed")."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            # notes about torch's own tracing (an RNN's flat weights, shared axis names)
            for note in _EXPORTER_NOTES:
                warnings.filterwarnings("ignore", message=note, category=UserWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export(
    model: nn.Module,
    example: torch.Tensor | Sequence[torch.Tensor],
    path: str | Path,
    *,
    format: str,
    **kw: Any,
) -> ExportReport:
    """Export by format name: ``onnx`` (:func:`export_onnx`) or ``torch-export`` (:func:`export_torch`)."""
    if format == "onnx":
        return export_onnx(model, example, path, **kw)
    if format == "torch-export":
        return export_torch(model, example, path, **kw)
    raise ExportError(f"unknown export format '{format}'; choose one of: {', '.join(FORMATS)}")


def export_model(
    model: nn.Module,
    task: Any,
    spec: ModelSpec,
    path: str | Path,
    *,
    format: str = "onnx",
    batch_size: int = 4,
    **kw: Any,
) -> ExportReport:
    """Export a trained model as its task says (:mod:`ember.tasks.contract`), verified on fresh inputs.

    The graph is ``contract.export_module`` (tensors in, a tensor or a tuple of tensors out: a
    detector's maps, a translator's ``(src, tgt_in) -> logits``) traced on
    ``contract.example_inputs``; it is checked against eager on other examples of the spec (batches
    of 1, ``batch_size`` and ``batch_size + 3`` rows, and token inputs cut shorter), none of them the
    traced one.

    Args:
        model: the trained model.
        task: its task (a run's or a bundle's).
        spec: its :class:`~ember.tasks.spec.ModelSpec`.
        path: the file to write.
        format: ``onnx`` or ``torch-export``.
        batch_size: rows of the traced example.
        **kw: :func:`export_onnx` / :func:`export_torch` options (``atol``, ``dynamic_batch``,
            ``metadata`` ...).
    """
    from ember.tasks import contract

    module = contract.export_module(task, model, spec).eval()
    n = max(1, batch_size)
    example = contract.example_inputs(task, spec, n, seed=0)
    if kw.get("dynamic_batch", True):
        sizes = ((1, 1), (2, n), (3, n + 3))  # (seed, rows): fresh examples, none of them the traced one
        kw.setdefault("checks", [contract.example_inputs(task, spec, k, seed=s) for s, k in sizes])
    else:
        kw.setdefault("checks", [contract.example_inputs(task, spec, n, seed=1)])
    return export(module, example, path, format=format, **kw)


__all__ = [
    "FORMATS",
    "ExportError",
    "ExportReport",
    "export",
    "export_model",
    "export_onnx",
    "export_torch",
]
