"""Bundles: one self-describing, verifiable file per trained model (``NAME.ember``).

A bundle is a sealed archive (see :mod:`ember.track.artifacts`): an uncompressed zip
whose ``manifest.json`` holds the sha256 and size of every other file, sealed by the sha256 of the
whole archive in its zip comment. Inside (format version 2):

==================== ==========================================================================
``manifest.json``    format name and version; sha256 + size of every file below
``model.safetensors`` the run's final weights, byte for byte (same sha256 as the run's artifact)
``config.yaml``      the run's resolved ember config
``meta.json``        the run's :class:`~ember.tasks.spec.ModelSpec` (``spec``: how the model is
                     rebuilt, its task, its inputs, classes, preprocessing), metrics, run, code
                     version (git SHA, source hash, ember version), data fingerprint and split
                     hashes, training environment, where the drift profile came from
``profile.json``     the reference profile of the training split (:mod:`ember.deploy.profile`),
                     when the inputs can be profiled (images, tables); ``meta.json`` says why not
``tokenizer.json``   the run's tokenizer, when the spec says the model reads text
``model.onnx``       the model exported through its task's contract (optional; required when the
                     spec cannot rebuild the model: a user's module with no entry point is then
                     served through ONNX Runtime, without its code)
``card.md``          the model card, when the run has one
==================== ==========================================================================

Opening a bundle verifies every hash before anything is parsed, then rebuilds the model with
``spec.build()`` (a zoo name, or a user's entry point: that code is named by the bundle, not sealed
in it, and must be importable where the bundle is opened) and loads the weights: nothing is
unpickled. Any damage is a :class:`BundleError` naming the file inside the bundle. Version-1
bundles (``meta.json`` naming ``model.name`` + ``model.kwargs``, always a profile) are still read.

Example:
    >>> import ember, tempfile
    >>> runs = tempfile.mkdtemp()
    >>> run = ember.fit("configs/digits-cnn.yaml", {"trainer.epochs": 1, "model.name": "cnn_tiny"},
    ...                 runs_dir=runs)  # doctest: +SKIP
    >>> path = package(run.run_id, Path(runs) / "digits.ember", runs_dir=runs)  # doctest: +SKIP
    >>> model = ember.load(path)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import platform
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from torch import nn

from ember._io import atomic_write_bytes
from ember.config import Config, ConfigError, dump_yaml, load_config, parse_yaml
from ember.deploy.profile import ReferenceProfile
from ember.tasks.spec import InputSpec, ModelSpec, SpecError
from ember.track.artifacts import ArchiveError, pack_archive, read_archive
from ember.track.registry import ModelRegistry, parse_ref

FORMAT = "ember-bundle"
FORMAT_VERSION = 2
WEIGHTS, CONFIG, META, PROFILE, CARD, TOKENIZER, ONNX = (
    "model.safetensors",
    "config.yaml",
    "meta.json",
    "profile.json",
    "card.md",
    "tokenizer.json",
    "model.onnx",
)
REQUIRED = (WEIGHTS, CONFIG, META)


class BundleError(ArchiveError):
    """A bundle that is damaged, tampered with or malformed; the message names the file inside it."""


@dataclass
class Bundle:
    """An opened, verified bundle (see :func:`open_bundle`)."""

    model: nn.Module | None
    """The rebuilt model with its weights, in eval mode; None when the spec cannot rebuild it (a
    user's module with no entry point): :attr:`onnx` then runs it."""
    meta: dict[str, Any]
    """``meta.json``: spec, metrics, run, code, data, environment, profile note."""
    config: Config
    """The run's resolved config."""
    profile: ReferenceProfile | None
    """The training split's reference profile, for drift (None: ``meta["profile"]["note"]`` says why)."""
    spec: ModelSpec
    """How the model is built, its task, inputs and classes."""
    path: Path
    """The bundle file."""
    sha256: str
    """sha256 of the whole bundle file."""
    card: str | None = None
    """``card.md``, when the bundle has one."""
    files: dict[str, str] | None = None
    """Name → sha256 of every file inside, from the manifest."""
    tokenizer: Any = None
    """The model's tokenizer (text models), else None."""
    onnx: bytes | None = None
    """``model.onnx``: the model exported through its task's contract, when the bundle carries it."""

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One input's shape, without the batch dimension."""
        return tuple(self.spec.inputs.shape)

    @property
    def classes(self) -> list[str] | None:
        """Class names (index i names output i), or None."""
        return self.spec.classes

    @cached_property
    def task(self) -> Any:
        """The model's task, built from the spec (and tokenizer); None for a task this ember does not
        know by name (the contract's defaults then apply)."""
        from ember.recipe.build import task_for

        try:
            return task_for(self.spec.task, self.spec.task_options, self.tokenizer)
        except KeyError:
            return None

    def module(self) -> nn.Module:
        """The model as served and exported: tensors in, a tensor or tuple of tensors out
        (``contract.export_module``), or the bundled ONNX graph in ONNX Runtime when there is no model."""
        from ember.tasks import contract

        if self.model is not None:
            return contract.export_module(self.task, self.model, self.spec).eval()
        assert self.onnx is not None  # open_bundle refuses a bundle with neither
        from ember.deploy._onnx import OnnxModule

        return OnnxModule(self.onnx)


# --------------------------------------------------------------------------- writing


def package(
    run_ref: str,
    out: str | Path,
    *,
    runs_dir: str | Path | None = None,
    card: str | Path | None = None,
    max_profile_rows: int = 10_000,
    onnx: bool = False,
    model: nn.Module | None = None,
) -> Path:
    """Package a finished run (a recipe's or a Python one) as a bundle file.

    The run is read through :func:`ember.recipe.load_run`; its spec goes into ``meta.json``, its
    tokenizer (when the spec has one) beside the weights, and the drift profile is computed on its
    training split (or, when it kept none, on its evaluation split; inputs that are not images or
    tables get no profile: ``meta["profile"]["note"]`` says which).

    Args:
        run_ref: a run id, unique prefix or ``latest``.
        out: the bundle file to write (a folder: ``<run name>.ember`` inside it).
        runs_dir: the run store (default ``$EMBER_RUNS`` or ``runs``).
        card: a model card (markdown) to include; default the run's ``card.md`` when it exists.
        max_profile_rows: rows the reference profile is computed on, at most.
        onnx: also carry ``model.onnx``, exported through the task's contract and verified in ONNX
            Runtime (always, when the spec cannot rebuild the model).
        model: the run's model class, built (``MyNet(...)``), for a run of a user's own module that
            names no entry point: its weights are loaded into it and it is exported to ONNX.

    Returns:
        The bundle's path. The bundle is opened again before returning and its model must reproduce
        the run's outputs exactly on the task's example inputs, so a bundle that cannot be loaded is
        never left behind.
    """
    from ember._version import __version__
    from ember.recipe import load_run

    run = load_run(run_ref, runs_dir=runs_dir, model=model)
    record, spec = run.record, run.spec
    if record.data_sha256 and run.data_sha256 != record.data_sha256:
        raise BundleError(
            f"the data of run {record.id} changed since it trained (data sha256 {record.data_sha256[:12]} "
            f"then, {str(run.data_sha256)[:12]} now); its bundle would describe different data"
        )
    if spec.tokenizer and run.tokenizer is None:
        raise BundleError(f"run {record.id}'s spec names a tokenizer, but the run has no tokenizer.json")
    from ember.deploy.packaging import data_meta, onnx_member, profile_of

    served = _module(run.task, run.model, spec)
    profile, profile_note = profile_of(run, served, max_rows=max_profile_rows)
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": run.config.name or record.name,
        "spec": spec.to_dict(),
        "model": _model_summary(spec, run.model),
        "task": spec.task,
        "metrics": _metrics(run.store, record.id, record.summary),
        "run": {
            "id": record.id,
            "name": record.name,
            "created": record.created,
            "finished": record.finished,
            "seed": record.seed,
            "config_sha256": record.config_sha256,
            "headline": record.headline,
            "best": record.best,
        },
        "code": {**record.source, "ember_version": __version__},
        "data": data_meta(run),
        "profile": profile_note,
        "environment": record.environment,
        "packaged_with": {
            "ember": __version__,
            "torch": torch.__version__.split("+")[0],
            "python": platform.python_version(),
        },
    }
    card_path = Path(card) if card is not None else record.folder / CARD
    if card is not None and not card_path.is_file():
        raise FileNotFoundError(f"model card {card_path} does not exist")
    text = card_path.read_text() if card_path.is_file() else None
    out = Path(out)
    if out.is_dir():
        out = out / f"{meta['name'] or 'model'}.ember"
    graph = None
    if onnx or not spec.rebuildable:
        graph, meta["onnx"] = onnx_member(run.model, run.task, spec, out)
    tokenizer = (record.folder / TOKENIZER).read_bytes() if spec.tokenizer else None
    path = write_bundle(
        out,
        weights=(record.folder / WEIGHTS).read_bytes(),
        config=run.config,
        meta=meta,
        profile=profile,
        card=text,
        spec=spec,
        tokenizer=tokenizer,
        onnx=graph,
    )
    _check_round_trip(path, served, run.task, spec)
    return path


def write_bundle(
    out: str | Path,
    *,
    weights: bytes,
    config: Config,
    meta: dict[str, Any],
    profile: ReferenceProfile | None,
    card: str | None = None,
    spec: ModelSpec | None = None,
    tokenizer: bytes | None = None,
    onnx: bytes | None = None,
) -> Path:
    """Write a bundle from its parts (what :func:`package` does after gathering them from a run).

    Args:
        out: the bundle file (written atomically).
        weights: a safetensors file's bytes, loadable into ``spec.build()``.
        config: the resolved config.
        meta: ``meta.json``; its ``spec`` is set from ``spec``. Without ``spec``, ``meta`` may
            describe the model the version-1 way (``model.name``, ``model.kwargs``, ``input_shape``,
            ``input_dtype``, ``input_range``, ``classes``, ``task``) and the spec is read from it.
        profile: the reference profile, or None.
        card: the model card's markdown, or None.
        spec: the model's spec.
        tokenizer: ``tokenizer.json``'s bytes, when the spec names one.
        onnx: ``model.onnx``'s bytes (required when the spec cannot rebuild the model).

    Returns:
        ``out`` as a Path.
    """
    spec = spec if spec is not None else spec_of(meta, "meta")
    if spec.tokenizer and tokenizer is None:
        raise BundleError("the spec names a tokenizer (spec.tokenizer); give write_bundle its tokenizer.json")
    if not spec.rebuildable and onnx is None:
        raise BundleError(
            "the spec cannot rebuild the model (no zoo name, no entry point): give it model.onnx"
        )
    meta = {**meta, "spec": spec.to_dict(), "format_version": FORMAT_VERSION}
    meta.setdefault("task", spec.task)
    files = {
        WEIGHTS: weights,
        CONFIG: dump_yaml(config).encode(),
        META: (json.dumps(_jsonable(meta), indent=2, allow_nan=False) + "\n").encode(),
    }
    optional = {
        PROFILE: profile.to_json().encode() if profile is not None else None,
        CARD: card.encode() if card is not None else None,
        TOKENIZER: tokenizer,
        ONNX: onnx,
    }
    files.update({name: data for name, data in optional.items() if data is not None})
    path = Path(out)
    atomic_write_bytes(path, pack_archive(files, kind=FORMAT, version=FORMAT_VERSION))
    return path


def spec_of(meta: dict[str, Any], what: str) -> ModelSpec:
    """The spec ``meta.json`` holds (version 2), or the one a version-1 ``meta.json`` describes."""
    try:
        if "spec" in meta:
            return ModelSpec.from_dict(meta["spec"])
        model = meta.get("model") or {}
        if not isinstance(model.get("name"), str) or not isinstance(model.get("kwargs"), dict):
            raise SpecError("it names no model: {'model': {'name': ..., 'kwargs': {...}}} or a 'spec'")
        if "input_shape" not in meta:
            raise SpecError("it gives no input shape (without the batch): 'input_shape'")
        shape = tuple(int(d) for d in meta["input_shape"])
        int64 = str(meta.get("input_dtype", "float32")).replace("torch.", "") in ("int64", "long", "int32")
        value_range = meta.get("input_range")
        if value_range is None and len(shape) == 3 and not int64:
            value_range = (0.0, 1.0)  # ember's image convention
        kwargs = model["kwargs"]
        kind = "tokens" if int64 else "image" if len(shape) == 3 else "table" if len(shape) == 1 else "vector"
        inputs = InputSpec(
            kind,  # type: ignore[arg-type]
            shape,
            "int64" if int64 else "float32",
            value_range=tuple(value_range) if value_range is not None else None,
            vocab_size=kwargs.get("vocab_size") if int64 else None,
        )
        classes = meta.get("classes")
        return ModelSpec(
            task=str(meta.get("task") or "classification"),
            inputs=inputs,
            model=model["name"],
            kwargs=dict(kwargs),
            classes=[str(c) for c in classes] if classes else None,
        )
    except SpecError as e:
        raise BundleError(f"{what}: file '{META}' does not describe the model: {e}") from None


def _module(task: Any, model: nn.Module, spec: ModelSpec) -> nn.Module:
    from ember.tasks import contract

    return contract.export_module(task, model, spec).eval()


def _model_summary(spec: ModelSpec, model: nn.Module) -> dict[str, Any]:
    """What ``meta.json`` says of the model (the spec holds how to rebuild it)."""
    if spec.model is not None:
        code = "ember's zoo"
    elif spec.entry_point is not None:
        code = f"entry point {spec.entry_point}: named, not sealed (its code must be installed where the bundle is loaded)"
    else:
        code = "none: a user's module with no entry point, served from model.onnx through ONNX Runtime"
    return {
        "name": spec.model or spec.entry_point or type(model).__name__,
        "class": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "code": code,
    }


def _check_round_trip(path: Path, served: nn.Module, task: Any, spec: ModelSpec) -> None:
    """The bundle must open and its model must give the run model's outputs, bit for bit, on the
    task's example inputs (and its ONNX graph, when it has one, was verified when exported)."""
    from ember.tasks import contract

    try:
        bundle = open_bundle(path)
        if bundle.model is None:
            return
        reopened = bundle.module()
        device = next((p.device for p in served.parameters()), torch.device("cpu"))
        x = contract.example_inputs(task, spec, 4, seed=1)
        with torch.no_grad():
            want = _flat(served(*(t.to(device) for t in x)))
            got = _flat(reopened(*x))
    except Exception:
        path.unlink(missing_ok=True)
        raise
    if len(want) != len(got) or not all(torch.equal(a.cpu(), b) for a, b in zip(want, got)):
        path.unlink(missing_ok=True)
        diff = max(
            ((a.cpu() - b).abs().max().item() for a, b in zip(want, got) if a.shape == b.shape), default=-1
        )
        raise BundleError(
            f"the model rebuilt from {path.name} differs from the run's (max abs diff {diff:.3g}); "
            "its spec does not describe it. Bundle removed."
        )


def _flat(out: Any) -> list[torch.Tensor]:
    return [out] if isinstance(out, torch.Tensor) else [o for o in out]


def _metrics(store: Any, run_id: str, summary: dict[str, Any]) -> dict[str, float]:
    """The run's final metrics: its summary plus every test/eval metric it logged (latest value)."""
    out = {k: float(v) for k, v in summary.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    for _, _, name, value in store.metrics(run_id):
        if name.startswith(("test/", "eval/")):
            out[name] = value
    return {k: v for k, v in out.items() if math.isfinite(v)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise BundleError(f"meta.json cannot hold {value!r} ({type(value).__name__}); use JSON values")


# --------------------------------------------------------------------------- reading


def open_bundle(
    path: str | Path,
    *,
    expected_sha256: str | None = None,
    registry: ModelRegistry | str | Path | None = None,
) -> Bundle:
    """Verify a bundle (every file's sha256, the seal) and rebuild its model, without pickle.

    Args:
        path: a bundle file, or a registry reference (``digits-cnn@production``) when no such file
            exists.
        expected_sha256: also require the whole file to have this sha256.
        registry: the registry to resolve references in (default ``$EMBER_REGISTRY``).

    Returns:
        The :class:`Bundle`, its model in eval mode.

    Raises:
        BundleError: naming the damaged or malformed file inside the bundle.
        FileNotFoundError: no such file (and not a registry reference).
    """
    file = _locate(path, registry)
    what = f"bundle {file}"
    try:
        archive = read_archive(file, what=what)
    except ArchiveError as e:
        raise BundleError(str(e)) from None
    if expected_sha256 is not None and archive.sha256 != expected_sha256:
        raise BundleError(f"{what} has sha256 {archive.sha256}, expected {expected_sha256}")
    manifest = archive.manifest
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{what} is a {manifest.get('format')!r} archive, not an ember bundle")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BundleError(f"{what} has format version {version!r}; this ember reads up to {FORMAT_VERSION}")
    files = archive.files
    for name in REQUIRED + ((PROFILE,) if version == 1 else ()):
        if name not in files:
            raise BundleError(f"{what}: file '{name}' is missing")
    meta = _parse(what, META, lambda: json.loads(files[META]))
    if not isinstance(meta, dict):
        raise BundleError(f"{what}: file '{META}' is not a JSON object")
    spec = spec_of(meta, what)
    config = _parse(what, CONFIG, lambda: load_config(parse_yaml(files[CONFIG], source=CONFIG)))
    profile = (
        _parse(what, PROFILE, lambda: ReferenceProfile.from_json(files[PROFILE]))
        if PROFILE in files
        else None
    )
    if spec.tokenizer and TOKENIZER not in files:
        raise BundleError(f"{what}: file '{TOKENIZER}' is missing (the spec says the model reads text)")
    tokenizer = _parse(what, TOKENIZER, lambda: _tokenizer(files[TOKENIZER])) if TOKENIZER in files else None
    model = _rebuild(what, spec, files[WEIGHTS], has_onnx=ONNX in files)
    return Bundle(
        model=model,
        meta=meta,
        config=config,
        profile=profile,
        spec=spec,
        path=file,
        sha256=archive.sha256,
        card=files[CARD].decode() if CARD in files else None,
        files={name: entry["sha256"] for name, entry in manifest["files"].items()},
        tokenizer=tokenizer,
        onnx=files.get(ONNX),
    )


def load(path: str | Path, *, registry: ModelRegistry | str | Path | None = None) -> nn.Module:
    """The model of a bundle (or registry reference), verified and rebuilt, in eval mode.

    A bundle whose model cannot be rebuilt from code (a user's module with no entry point) gives
    its ONNX graph, run by ONNX Runtime, as a module of tensors in and out.

    Example:
        >>> model = ember.load("digits.ember")  # doctest: +SKIP
        >>> model = ember.load("digits-cnn@production")  # doctest: +SKIP
    """
    bundle = open_bundle(path, registry=registry)
    return bundle.model if bundle.model is not None else bundle.module()


def _locate(path: str | Path, registry: ModelRegistry | str | Path | None) -> Path:
    file = Path(path)
    if file.is_file():
        return file
    text = str(path)
    if file.exists():
        raise BundleError(f"{file} is not a file; a bundle is one .ember file")
    if "/" in text or "\\" in text or text.endswith(".ember"):
        raise FileNotFoundError(f"no bundle file {file}; make one with `ember package RUN -o FILE`")
    parse_ref(text)  # a bad name is a RegistryError saying what names look like
    reg = registry if isinstance(registry, ModelRegistry) else ModelRegistry(registry)
    return reg.resolve(text)


def _parse(what: str, name: str, read: Any) -> Any:
    try:
        return read()
    except (ValueError, TypeError, KeyError, UnicodeDecodeError, ConfigError) as e:
        raise BundleError(f"{what}: file '{name}' cannot be read: {e}") from None


def _tokenizer(data: bytes) -> Any:
    from ember.data.tokenizers import load_tokenizer

    with tempfile.TemporaryDirectory(prefix="ember-bundle-") as tmp:
        file = Path(tmp) / TOKENIZER
        file.write_bytes(data)
        return load_tokenizer(file)


def _rebuild(what: str, spec: ModelSpec, weights: bytes, *, has_onnx: bool) -> nn.Module | None:
    """The model from its spec with the bundle's weights; None when only the ONNX graph can run it."""
    if not spec.rebuildable:
        if not has_onnx:
            raise BundleError(f"{what}: the spec cannot rebuild the model and file '{ONNX}' is missing")
        return None
    try:
        model = spec.build()
    except SpecError as e:
        if spec.entry_point is not None and has_onnx:
            return None  # the user's code is not installed here: its ONNX graph serves it
        raise BundleError(
            f"{what}: file '{META}': {e}; it may need a newer ember or the model's code"
        ) from None
    try:
        model.load_state_dict(load_safetensors(weights), strict=True)
    except (SafetensorError, RuntimeError, ValueError) as e:
        name = spec.model or spec.entry_point
        raise BundleError(f"{what}: file '{WEIGHTS}' does not fit model '{name}': {e}") from None
    return model.eval()


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Bundle",
    "BundleError",
    "load",
    "open_bundle",
    "package",
    "spec_of",
    "write_bundle",
]
