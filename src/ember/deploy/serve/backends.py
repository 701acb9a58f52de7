"""Model runners for serving: eager PyTorch, or the backend that ``ember plan`` chose.

A runner maps one batch tensor to a :class:`RunOutput`: the model's outputs and, when the model
offers timm's ``forward_features`` / ``forward_head`` split, its pre-logit embeddings (the drift
monitor compares those with the bundle's reference sample). Backends:

- ``eager``: the ``nn.Module`` under ``torch.inference_mode`` (always available; the default).
- ``compiled``: the same module through ``torch.compile`` (dynamic batch dimension).
- ``bf16`` / ``compiled-bf16``: a bfloat16 copy of the module (``ember.deploy.quantize.bf16``),
  eager or compiled; requests and replies stay float32 (token ids stay integers), embeddings too.
- ``int8-dynamic``: PyTorch dynamic int8 quantization of the Linear layers.
- ``onnxruntime`` / ``onnxruntime-int8``: the module exported to ONNX (dynamic batch, outputs and
  embeddings, verified by ``ember.deploy.export.export_onnx``) and run by ONNX Runtime, optionally
  after ONNX Runtime's dynamic int8 quantization of MatMul/Gemm.

A serving plan is the JSON file ``ember plan`` writes (``plan.json`` beside a bundle)::

    {"backend": "onnxruntime-int8", "threads": 2, "max_batch": 64, "max_wait_ms": 2.0,
     "artifact": "plan.model.int8.onnx", "artifact_sha256": "...", ...}

and :func:`planned_runner` serves exactly what it measured (``ember.deploy.placement.runner``).

Example:
    >>> import torch
    >>> from ember.models import create
    >>> runner = build_runner(create("cnn_tiny", in_channels=1, image_size=8), "eager")
    >>> out = runner(torch.rand(3, 1, 8, 8))
    >>> tuple(out.outputs.shape), tuple(out.embeddings.shape)
    ((3, 10), (3, 16))
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ember._io import require
from ember.tasks.spec import InputSpec, ModelSpec

BACKENDS = ("eager", "compiled", "bf16", "compiled-bf16", "int8-dynamic", "onnxruntime", "onnxruntime-int8")
TORCH_BACKENDS = ("eager", "compiled", "bf16", "compiled-bf16", "int8-dynamic")
PLAN_KEYS: dict[str, tuple[type, ...]] = {
    "backend": (str,),
    "threads": (int,),
    "max_batch": (int,),
    "max_wait_ms": (int, float),
}


@dataclass
class RunOutput:
    """What a runner returns for one batch."""

    outputs: Any
    """(B, ...) model outputs (logits for a classifier), or a tuple of them (a detector's maps)."""
    embeddings: torch.Tensor | None = None
    """(B, D) pre-logit features, or None when the model has no forward_features/forward_head."""


class Runner(Protocol):
    """Anything that runs a batch: ``runner(*inputs) -> RunOutput``, with a ``backend`` name."""

    backend: str

    def __call__(self, *inputs: torch.Tensor) -> RunOutput: ...


class WithEmbeddings(nn.Module):
    """Wrap a model so that one forward returns ``(outputs, embeddings)``.

    Uses timm's split when present: ``emb = forward_head(forward_features(x), pre_logits=True)``
    and ``outputs = head(emb)`` (``forward_head(feats)`` when the model has no ``head``), so the
    embeddings cost nothing extra. Models without the split return ``(model(*inputs), None)``.
    """

    def __init__(self, model: nn.Module) -> None:
        from ember.deploy.profile import has_pre_logits

        super().__init__()
        self.model = model
        self.has_embeddings = has_pre_logits(model)

    def forward(self, x: torch.Tensor) -> tuple[Any, torch.Tensor | None]:
        if not self.has_embeddings:
            return self.model(x), None
        feats = self.model.forward_features(x)  # type: ignore[operator]
        emb = self.model.forward_head(feats, pre_logits=True)  # type: ignore[operator]
        head = getattr(self.model, "head", None)
        out = head(emb) if isinstance(head, nn.Module) else self.model.forward_head(feats)  # type: ignore[operator]
        return out, emb


class TorchRunner:
    """Runs an ``nn.Module`` (eager, compiled, bf16 or int8-quantized) under ``inference_mode``.

    A bf16 model (``quantize.Bf16Module``) is unwrapped so that its embeddings are served too, and
    the whole forward (outputs and embeddings) is cast back to float32.
    """

    def __init__(self, model: nn.Module, backend: str = "eager") -> None:
        from ember.deploy.quantize import Bf16Module

        self.backend = backend
        half = isinstance(model, Bf16Module)
        inner: nn.Module = model.model if isinstance(model, Bf16Module) else model
        self.module = WithEmbeddings(inner.eval()).eval()
        # a model without timm's split may take several inputs (a translator's source and target)
        forward: nn.Module = self.module if self.module.has_embeddings else _OutputsOnly(inner)
        self._forward: Callable[..., Any] = Bf16Module(forward) if half else forward
        if backend in ("compiled", "compiled-bf16"):
            self._forward = torch.compile(self._forward, dynamic=True)

    def __call__(self, *inputs: torch.Tensor) -> RunOutput:
        with torch.inference_mode():
            out, emb = self._forward(*inputs)
        return RunOutput(out, emb)


class _OutputsOnly(nn.Module):
    """A model's outputs and no embeddings, for any number of inputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> tuple[Any, None]:
        return self.model(*inputs), None


class OnnxRunner:
    """Runs an ONNX file: inputs ``x`` (or several); outputs ``outputs`` and optionally ``embeddings``
    (``embeddings=True``, the graphs :func:`export_for_serving` writes), else the model's outputs
    (a tuple when the graph has several, e.g. a bundle's ``model.onnx`` of a detector)."""

    def __init__(
        self,
        path: str | Path | bytes,
        *,
        backend: str = "onnxruntime",
        threads: int = 0,
        embeddings: bool = True,
    ) -> None:
        ort = require("onnxruntime", "export", what="this serving backend")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: ONNX Runtime's default
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        self.backend = backend
        self.path = Path(path) if not isinstance(path, bytes) else None
        source = path if isinstance(path, bytes) else str(path)
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in self.session.get_inputs()]
        outputs = len(self.session.get_outputs())
        self._has_embeddings = embeddings and outputs == 2
        self._several = not embeddings and outputs > 1

    def __call__(self, *inputs: torch.Tensor) -> RunOutput:
        feed = {name: x.contiguous().numpy() for name, x in zip(self._inputs, inputs, strict=True)}
        results = self.session.run(None, feed)
        if self._several:
            return RunOutput(tuple(torch.from_numpy(r) for r in results))
        emb = torch.from_numpy(results[1]) if self._has_embeddings else None
        return RunOutput(torch.from_numpy(results[0]), emb)


class PlannedRunner:
    """The artifact a serving plan measured (``ember.deploy.placement.runner``), run for serving.

    ONNX Runtime artifacts give the model's outputs only (no embeddings: drift then watches the
    inputs and the predicted classes).
    """

    def __init__(self, module: Callable[[torch.Tensor], Any], backend: str, artifact: str | None) -> None:
        self.module, self.backend, self.artifact = module, backend, artifact

    def __call__(self, *inputs: torch.Tensor) -> RunOutput:
        with torch.inference_mode():
            return RunOutput(self.module(*inputs))


def planned_runner(plan: dict[str, Any], model: nn.Module, *, folder: str | Path | None = None) -> Runner:
    """The runner a saved plan (``plan.json`` from ``ember plan``) chose, built by ``placement.runner``.

    A plan that names an ONNX artifact loads that very file (its sha256 checked against the plan);
    torch backends get the same transform the plan measured, with the plan's thread count.

    Args:
        plan: the plan dict (:func:`load_plan`).
        model: the model the plan was made for.
        folder: the plan file's folder (where its ``artifact`` lies).
    """
    from ember.deploy import placement

    backend, threads = str(plan.get("backend", "eager")), int(plan.get("threads", 0))
    if threads > 0:
        torch.set_num_threads(threads)
    if backend in ("compiled", "compiled-bf16"):  # compiled with the serving wrapper (outputs and embeddings)
        return TorchRunner(_bf16(model) if backend == "compiled-bf16" else model, backend)
    if backend in ("eager", "bf16", "int8-dynamic"):
        return TorchRunner(placement.runner(plan, model, folder=folder), backend)
    if not plan.get("artifact"):
        raise ValueError(
            f"serving plan with backend '{backend}' names no artifact; make it with `ember plan`"
        )
    return PlannedRunner(placement.runner(plan, model, folder=folder), backend, str(plan["artifact"]))


def build_runner(
    model: nn.Module,
    backend: str = "eager",
    *,
    example: torch.Tensor | tuple[torch.Tensor, ...] | None = None,
    threads: int = 0,
    workdir: str | Path | None = None,
) -> Runner:
    """The runner for ``backend`` (one of ``BACKENDS``).

    Args:
        model: the trained model (put in eval mode; never modified in place).
        backend: ``eager`` (no extra dependency), ``compiled``, ``bf16``, ``compiled-bf16``,
            ``int8-dynamic``, ``onnxruntime`` or ``onnxruntime-int8``.
        example: an input batch ``(B, *input_shape)`` (or a tuple, one per model argument); required
            for the ONNX backends (export).
        threads: intra-op threads (0: leave the library default). For torch backends this sets
            the process-wide ``torch.set_num_threads``.
        workdir: where ONNX files are kept (default: a temporary folder, removed once loaded).

    Returns:
        A callable ``runner(x) -> RunOutput`` with a ``backend`` attribute.

    Raises:
        ValueError: an unknown backend, or an ONNX backend without ``example``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown serving backend '{backend}'; expected one of {', '.join(BACKENDS)}")
    model = model.eval()
    if backend in TORCH_BACKENDS:
        if threads > 0:
            torch.set_num_threads(threads)
        if backend == "int8-dynamic":
            model = _int8_dynamic(model)
        elif backend in ("bf16", "compiled-bf16"):
            model = _bf16(model)
        return TorchRunner(model, backend)
    if example is None:
        raise ValueError(f"backend '{backend}' exports the model to ONNX and needs an example batch")
    with tempfile.TemporaryDirectory(prefix="ember-serve-") as tmp:
        # the session holds the graph in memory: without a workdir the files go once it is open
        folder = Path(workdir) if workdir is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path = export_for_serving(model, example, folder / "model.onnx")
        if backend == "onnxruntime-int8":
            path = _onnx_int8(path, folder / "model.int8.onnx")
        embeddings = WithEmbeddings(model).has_embeddings
        return OnnxRunner(path, backend=backend, threads=threads, embeddings=embeddings)


def export_for_serving(
    model: nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...], path: str | Path
) -> Path:
    """Export ``model`` to ONNX for serving: outputs ``(outputs, embeddings)``, a dynamic batch axis.

    The embeddings (see :class:`WithEmbeddings`) feed the drift monitor; models without timm's
    split export their outputs alone. The export is verified against the eager model by
    ``ember.deploy.export.export_onnx`` (loaded back in ONNX Runtime, several batch sizes).
    """
    from ember.deploy.export import export_onnx

    wrapped = WithEmbeddings(model).eval()
    export_onnx(wrapped if wrapped.has_embeddings else model, example, path, output_name="outputs")
    return Path(path)


def _onnx_int8(src: Path, dst: Path) -> Path:
    # ONNX Runtime dynamic int8 of MatMul/Gemm; convolutions stay float (see ember.deploy.quantize)
    from ember.deploy._onnx import quantize_dynamic_file

    return quantize_dynamic_file(src, dst)


def _int8_dynamic(model: nn.Module) -> nn.Module:
    from ember.deploy.quantize import dynamic_int8

    return dynamic_int8(model)


def _bf16(model: nn.Module) -> nn.Module:
    from ember.deploy.quantize import bf16

    return bf16(model)


def plan_digest(plan: dict[str, Any]) -> str:
    """sha256 of a plan's canonical JSON, without its own ``sha256`` key (what ``plan.json`` records)."""
    body = {k: v for k, v in plan.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def load_plan(path: str | Path) -> dict[str, Any]:
    """Read and check a serving plan (``plan.json`` from ``ember plan``).

    Returns:
        The plan dict; unknown keys are kept (a plan also records why it chose what it chose).

    Raises:
        ValueError: the file is damaged (its ``sha256`` differs), or a key has the wrong type or
            an unknown backend, named.
    """
    path = Path(path)
    try:
        plan = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"serving plan {path} is not valid JSON: {e}") from None
    if not isinstance(plan, dict):
        raise ValueError(f"serving plan {path} must be a JSON object, got {type(plan).__name__}")
    if "sha256" in plan and plan["sha256"] != (got := plan_digest(plan)):
        raise ValueError(
            f"serving plan {path} is damaged or was edited: its contents hash to {got}, it records "
            f"{plan['sha256']}. Make it again with `ember plan`"
        )
    for key, kind in PLAN_KEYS.items():
        if key in plan and (not isinstance(plan[key], kind) or isinstance(plan[key], bool)):
            expected = " or ".join(t.__name__ for t in kind)
            raise ValueError(f"serving plan {path}: '{key}' must be {expected}, got {plan[key]!r}")
    backend = plan.get("backend", "eager")
    if backend not in BACKENDS:
        raise ValueError(f"serving plan {path}: unknown backend '{backend}'; expected one of {BACKENDS}")
    return plan


# --------------------------------------------------------------------------- what is served


@dataclass
class ServedModel:
    """A runner plus everything the server needs to know about its inputs and outputs.

    Build one with :meth:`from_module` (any ``nn.Module``) or :meth:`from_bundle` (an ember bundle,
    with its spec, reference profile and serving plan). The spec's input kind decides how a
    request is decoded (images, table rows, token ids, text); its task decides how outputs are
    answered (``contract.decode``) and whether text can be generated (``contract.generate_text``).
    """

    runner: Runner
    """Runs a batch ``(B, *input_shape) -> RunOutput``."""
    input_shape: tuple[int, ...]
    """One example's shape, without the batch dimension: ``(C, H, W)`` images, ``(F,)`` tables,
    ``(T,)`` token ids."""
    input_dtype: str = "float32"
    """``float32`` (images, tables) or ``int64`` (token ids)."""
    input_range: tuple[float, float] | None = None
    """Inclusive bounds on every input value (images: ``(0, 1)``), or None for any finite value."""
    classes: list[str] | None = None
    """Class names of a classifier (the response adds predictions and labels), else None."""
    name: str = "model"
    """A short name, shown in /v1/model and /metrics."""
    meta: dict[str, Any] | None = None
    """The model card / bundle metadata, returned by /v1/model."""
    sha256: str = ""
    """The bundle's sha256, when served from one."""
    reference: Any = None
    """A ``monitor.Reference`` for drift, or None (drift off)."""
    features: Callable[[torch.Tensor], torch.Tensor] | None = None
    """Per-example input features used by the reference (None: ``ember.deploy.profile.input_features``)."""
    tokenizer: Any = None
    """For text models: an object with ``encode(str) -> list[int]`` (and optionally ``pad_id``)."""
    plan: dict[str, Any] | None = None
    """The serving plan that chose the backend, if any."""
    spec: ModelSpec | None = None
    """The model's spec (default: one describing the fields above: a classifier when ``classes``)."""
    task: Any = None
    """The model's task, asked how to decode outputs and generate text (default: the spec's task by
    name; None for a name this ember does not know, which gets the contract's defaults)."""
    model: nn.Module | None = None
    """The PyTorch model itself, for ``/v1/generate`` (None: an ONNX graph is served)."""

    def __post_init__(self) -> None:
        if self.spec is None:
            self.spec = _default_spec(self.input_shape, self.input_dtype, self.input_range, self.classes)
        if self.task is None:  # a task this ember does not know by name stays None: the contract's defaults
            self.task = _task_named(self.spec.task)

    @property
    def input_kind(self) -> str:
        """``image``, ``table``, ``tokens`` or ``vector`` (the spec's ``inputs.kind``)."""
        assert self.spec is not None
        return self.spec.inputs.kind

    @property
    def is_image(self) -> bool:
        """Inputs are ``(C, H, W)`` images with 1 or 3 channels (raw image bytes are accepted)."""
        return self.input_kind == "image" and len(self.input_shape) == 3 and self.input_shape[0] in (1, 3)

    def example(self, n: int = 1) -> tuple[torch.Tensor, ...]:
        """``n`` valid inputs, as the task lays them out (warm-up, probes)."""
        from ember.tasks import contract

        assert self.spec is not None
        return contract.example_inputs(self.task, self.spec, n, seed=0)

    @classmethod
    def from_module(
        cls,
        model: nn.Module,
        input_shape: tuple[int, ...],
        *,
        backend: str = "eager",
        threads: int = 0,
        runner: Runner | None = None,
        **fields: Any,
    ) -> ServedModel:
        """Serve a plain ``nn.Module`` taking ``(B, *input_shape)`` inputs.

        ``backend`` and ``threads`` build the runner (:func:`build_runner`) unless ``runner`` is
        given already (e.g. :func:`planned_runner`). ``fields`` are the other fields (``spec`` and
        ``task`` among them).

        Example:
            >>> from ember.models import create
            >>> served = ServedModel.from_module(create("cnn_tiny", in_channels=1, image_size=8), (1, 8, 8),
            ...                                  input_range=(0.0, 1.0), classes=[str(i) for i in range(10)])
            >>> served.runner.backend, served.is_image
            ('eager', True)
        """
        fields.setdefault("model", model)
        served = cls(runner=_Pending(), input_shape=tuple(input_shape), **fields)
        served.runner = runner or build_runner(model, backend, example=served.example(2), threads=threads)
        return served

    @classmethod
    def from_bundle(
        cls,
        bundle: Any,
        *,
        plan: dict[str, Any] | None = None,
        backend: str | None = None,
        plan_folder: str | Path | None = None,
    ) -> ServedModel:
        """Serve an opened bundle (``ember.deploy.bundle.open_bundle``) with the plan's backend.

        The model served is the one its task exports (``contract.export_module``: a detector's maps
        as a tuple ...). A plan from ``ember plan`` (one naming its measured ``artifact``) is served
        through :func:`planned_runner`: the very file the plan timed and checked. A plan without an
        artifact (written by hand) builds its backend with :func:`build_runner`. A bundle whose
        model cannot be rebuilt from code is served from its ``model.onnx`` in ONNX Runtime.

        Args:
            bundle: an opened bundle (``spec``, ``task``, ``model``, ``module()``, ``onnx``,
                ``meta``, ``profile``, ``tokenizer``, ``sha256``).
            plan: a serving plan (``load_plan``); its ``backend`` and ``threads`` are used.
            backend: overrides the plan's backend (default: the plan's, else ``eager``).
            plan_folder: the plan file's folder, where its artifact lies.
        """
        meta = dict(getattr(bundle, "meta", None) or {})
        if getattr(bundle, "card", None):
            meta["model_card"] = bundle.card  # the markdown card, shown by /v1/model
        spec, task = bundle.spec, bundle.task
        chosen = backend or (plan or {}).get("backend", "eager")
        threads = int((plan or {}).get("threads", 0))
        if bundle.model is None:  # a user's module with no code here: its ONNX graph
            runner: Runner = OnnxRunner(bundle.onnx, backend="onnxruntime", threads=threads, embeddings=False)
        elif plan is not None and plan.get("artifact") and chosen == plan.get("backend"):
            runner = planned_runner(plan, bundle.module(), folder=plan_folder)
        else:
            runner = _Pending()
        served = cls(
            runner=runner,
            input_shape=tuple(spec.inputs.shape),
            input_dtype=spec.inputs.dtype,
            input_range=spec.inputs.value_range,
            classes=spec.classes,
            name=str(meta.get("name", getattr(bundle, "name", "model"))),
            meta=meta,
            sha256=str(getattr(bundle, "sha256", "")),
            tokenizer=getattr(bundle, "tokenizer", None),
            plan=plan,
            spec=spec,
            task=task,
            model=bundle.model,
        )
        if isinstance(served.runner, _Pending):
            served.runner = build_runner(bundle.module(), chosen, example=served.example(2), threads=threads)
        profile = getattr(bundle, "profile", None)
        if profile is not None:
            from ember.deploy.serve.monitor import reference_from_profile

            served.reference = reference_from_profile(profile)
            served.features = getattr(profile, "features", None)
        return served


class _Pending:
    """The runner of a ServedModel being built (replaced before it is returned)."""

    backend = "pending"

    def __call__(self, *inputs: torch.Tensor) -> RunOutput:
        raise RuntimeError("this served model's runner was not built")


def _default_spec(
    shape: tuple[int, ...], dtype: str, value_range: tuple[float, float] | None, classes: list[str] | None
) -> ModelSpec:
    """The spec of a bare module served with these fields: a classifier when it has class names."""
    shape = tuple(int(d) for d in shape)
    if dtype == "int64":  # ids below the range's top (the examples warm-up and export run on)
        vocab = int(value_range[1]) + 1 if value_range is not None else 2
        inputs = InputSpec("tokens", shape, "int64", vocab_size=max(vocab, 2))
    else:
        kind = "image" if len(shape) == 3 else "table" if len(shape) == 1 else "vector"
        inputs = InputSpec(kind, shape, value_range=tuple(value_range) if value_range else None)  # type: ignore[arg-type]
    return ModelSpec(task="classification" if classes else "regression", inputs=inputs, classes=classes)


def _task_named(name: str) -> Any:
    from ember import tasks

    try:
        return tasks.create(name)
    except KeyError:
        return None
