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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ember._io import atomic_path, require

FORMATS = ("onnx", "torch-export")
ONNX_SINGLE_FILE_LIMIT = 1 << 30  # weights above this go to a side file (protobuf caps a file at 2 GiB)


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

    def summary(self) -> str:
        """One line for logs and the CLI."""
        return (
            f"{self.format} {self.path} ({self.size / 1024:.1f} KiB, sha256 {self.sha256[:12]}): "
            f"max abs error {self.max_abs_error:.3g} <= {self.atol:g} on batch sizes "
            f"{', '.join(map(str, self.batch_sizes))}" + (f", opset {self.opset}" if self.opset else "")
        )


def export_onnx(
    model: nn.Module,
    example: torch.Tensor,
    path: str | Path,
    *,
    dynamic_batch: bool = True,
    atol: float = 1e-4,
    opset: int | None = None,
    input_name: str = "input",
    output_name: str = "output",
    metadata: dict[str, str] | None = None,
) -> ExportReport:
    """Export ``model`` to ONNX (torch's dynamo exporter) and verify it in ONNX Runtime.

    Args:
        model: the model; exported in eval mode (its mode is restored afterwards).
        example: an input batch ``(B, ...)`` on the model's device.
        path: the ``.onnx`` file to write (replaced atomically, only once verified).
        dynamic_batch: make the batch axis symbolic and check other batch sizes too.
        atol: the largest absolute difference from eager outputs that passes (1e-4 for fp32).
        opset: the ONNX opset (default: the exporter's).
        input_name: the graph input's name.
        output_name: the graph output's name (``output_1`` ... for further outputs).
        metadata: strings stored in the model's ``metadata_props`` (e.g. the bundle's sha256).

    Returns:
        The :class:`ExportReport`.

    Raises:
        ExportError: the exported graph differs from the model by more than ``atol``.
        ImportError: onnx / onnxscript / onnxruntime missing, with the pip line to run.
    """
    onnx = require("onnx", "export", what="ONNX export")
    require("onnxscript", "export", what="ONNX export")
    ort = require("onnxruntime", "export", what="ONNX export")
    started = time.perf_counter()
    path = Path(path)
    example = _batch_of_two(example) if dynamic_batch else example
    with _eval(model), torch.no_grad():
        outputs = _flat(model(example))
        names = [input_name], [output_name] + [f"{output_name}_{i}" for i in range(1, len(outputs))]
        dynamic = ({0: torch.export.Dim("batch", min=1, max=1 << 20)},) if dynamic_batch else None
        with _quiet_exporter():
            program = torch.onnx.export(
                model,
                (example,),
                input_names=names[0],
                output_names=names[1],
                dynamic_shapes=dynamic,
                opset_version=opset,
                dynamo=True,
                verbose=False,
            )
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
            session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
            batch_dim = session.get_inputs()[0].shape[0]

            def run(x: torch.Tensor) -> list[torch.Tensor]:
                return [torch.from_numpy(o) for o in session.run(None, {input_name: x.cpu().numpy()})]

            error, sizes = _verify(model, example, run, dynamic_batch, atol, "ONNX Runtime")
            if dynamic_batch and isinstance(batch_dim, int):
                raise ExportError(f"the ONNX graph's batch axis is fixed at {batch_dim}, not dynamic")
    opset_found = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return _report("onnx", path, error, atol, sizes, dynamic_batch, started, opset_found)


def export_torch(
    model: nn.Module,
    example: torch.Tensor,
    path: str | Path,
    *,
    dynamic_batch: bool = True,
    atol: float = 1e-4,
) -> ExportReport:
    """Export ``model`` with ``torch.export`` to a ``.pt2`` file, load it back and verify it.

    The ``.pt2`` archive is torch's own format (``torch.export.save``); its tensors are read back
    with torch's weights-only loader.

    Args:
        model: the model; exported in eval mode (its mode is restored afterwards).
        example: an input batch ``(B, ...)``.
        path: the ``.pt2`` file to write (replaced atomically, only once verified).
        dynamic_batch: make the batch axis symbolic and check other batch sizes too.
        atol: the largest absolute difference from eager outputs that passes.

    Returns:
        The :class:`ExportReport`.
    """
    started = time.perf_counter()
    path = Path(path)
    example = _batch_of_two(example) if dynamic_batch else example
    with _eval(model), torch.no_grad():
        dynamic = ({0: torch.export.Dim("batch", min=1, max=1 << 20)},) if dynamic_batch else None
        with _quiet_exporter():
            program = torch.export.export(model, (example,), dynamic_shapes=dynamic)
        with _staged(path) as tmp:
            torch.export.save(program, str(tmp))
            with _quiet_exporter():
                loaded = torch.export.load(str(tmp)).module()

            def run(x: torch.Tensor) -> list[torch.Tensor]:
                return _flat(loaded(x))

            error, sizes = _verify(
                model, example, run, dynamic_batch, atol, "the loaded torch.export program"
            )
    return _report("torch-export", path, error, atol, sizes, dynamic_batch, started, None)


# --------------------------------------------------------------------------- helpers


def _verify(
    model: nn.Module,
    example: torch.Tensor,
    run: Callable[[torch.Tensor], list[torch.Tensor]],
    dynamic_batch: bool,
    atol: float,
    where: str,
) -> tuple[float, tuple[int, ...]]:
    """Max |exported - eager| over the example and, with a dynamic batch, batches of 1 and B + 3."""
    batches = [example]
    if dynamic_batch:
        g = torch.Generator().manual_seed(0)
        extra = len(example) + 3
        lo, hi = example.min(), example.max()
        if example.is_floating_point():
            more = lo + (hi - lo) * torch.rand((extra, *example.shape[1:]), generator=g)
        else:
            more = torch.randint(int(lo), int(hi) + 1, (extra, *example.shape[1:]), generator=g)
        batches = [example[:1], example, more.to(example.device, example.dtype)]
    worst = 0.0
    for x in batches:
        want = [o.detach().cpu().float() for o in _flat(model(x))]
        got = [o.detach().cpu().float() for o in run(x)]
        if len(want) != len(got) or any(a.shape != b.shape for a, b in zip(want, got)):
            raise ExportError(
                f"{where} returned shapes {[tuple(o.shape) for o in got]} for a batch of {len(x)}; "
                f"the model returns {[tuple(o.shape) for o in want]}"
            )
        worst = max([worst] + [(a - b).abs().max().item() for a, b in zip(want, got) if a.numel()])
    if not worst <= atol:  # also catches NaN
        raise ExportError(
            f"{where} differs from the eager model by up to {worst:.3g} (tolerance {atol:g}); "
            "the export does not compute what the model computes"
        )
    return worst, tuple(len(x) for x in batches)


def _report(
    fmt: str,
    path: Path,
    error: float,
    atol: float,
    sizes: tuple[int, ...],
    dynamic: bool,
    started: float,
    opset: int | None,
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
        batch_sizes=sizes,
        dynamic_batch=dynamic,
        seconds=time.perf_counter() - started,
        opset=opset,
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
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export(
    model: nn.Module, example: torch.Tensor, path: str | Path, *, format: str, **kw: Any
) -> ExportReport:
    """Export by format name: ``onnx`` (:func:`export_onnx`) or ``torch-export`` (:func:`export_torch`)."""
    if format == "onnx":
        return export_onnx(model, example, path, **kw)
    if format == "torch-export":
        return export_torch(model, example, path, **kw)
    raise ExportError(f"unknown export format '{format}'; choose one of: {', '.join(FORMATS)}")


__all__ = [
    "FORMATS",
    "ExportError",
    "ExportReport",
    "export",
    "export_onnx",
    "export_torch",
]
