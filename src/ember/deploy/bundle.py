"""Bundles: one self-describing, verifiable file per trained model (``NAME.ember``).

A bundle is a sealed archive (see :mod:`ember.track.artifacts`): an uncompressed zip
whose ``manifest.json`` holds the sha256 and size of every other file, sealed by the sha256 of the
whole archive in its zip comment. Inside:

==================== ==========================================================================
``manifest.json``    format name and version; sha256 + size of every file below
``model.safetensors`` the run's final weights, byte for byte (same sha256 as the run's artifact)
``config.yaml``      the run's resolved ember config
``meta.json``        model name + builder kwargs, input shape/dtype/range, classes, task, metrics,
                     run, code version (git SHA, source hash, ember version), data fingerprint and
                     split hashes, training environment
``profile.json``     the reference profile of the training split (:mod:`ember.deploy.profile`)
``card.md``          the model card, when the run has one
==================== ==========================================================================

Opening a bundle verifies every hash before anything is parsed, then rebuilds the model from the zoo
by name and loads the weights: nothing is unpickled or executed. Any damage is a :class:`BundleError`
naming the file inside the bundle.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from torch import nn

from ember import models
from ember._io import atomic_write_bytes
from ember._registry import accepted_kwargs
from ember.config import Config, ConfigError, dump_yaml, load_config, parse_yaml
from ember.data import ArrayData, DataBundle, fingerprint, fingerprint_indices
from ember.deploy.profile import ReferenceProfile, build_profile
from ember.track import RunStore
from ember.track.artifacts import ArchiveError, pack_archive, read_archive
from ember.track.registry import ModelRegistry, parse_ref

FORMAT = "ember-bundle"
FORMAT_VERSION = 1
WEIGHTS, CONFIG, META, PROFILE, CARD = (
    "model.safetensors",
    "config.yaml",
    "meta.json",
    "profile.json",
    "card.md",
)
REQUIRED = (WEIGHTS, CONFIG, META, PROFILE)


class BundleError(ArchiveError):
    """A bundle that is damaged, tampered with or malformed; the message names the file inside it."""


@dataclass
class Bundle:
    """An opened, verified bundle (see :func:`open_bundle`)."""

    model: nn.Module
    """The rebuilt model with its weights, in eval mode."""
    meta: dict[str, Any]
    """``meta.json``: model, input, classes, task, metrics, run, code, data, environment."""
    config: Config
    """The run's resolved config."""
    profile: ReferenceProfile
    """The training split's reference profile, for drift."""
    input_shape: tuple[int, ...]
    """One input's shape, without the batch dimension."""
    classes: list[str] | None
    """Class names (index i names logit i), or None."""
    path: Path
    """The bundle file."""
    sha256: str
    """sha256 of the whole bundle file."""
    card: str | None = None
    """``card.md``, when the bundle has one."""
    files: dict[str, str] | None = None
    """Name → sha256 of every file inside, from the manifest."""


# --------------------------------------------------------------------------- writing


def model_kwargs(cfg: Config, data: DataBundle) -> dict[str, Any]:
    """The builder kwargs ``ember.recipe.build_model`` uses: the config's options plus the data's shape.

    Kept in step with :func:`ember.recipe.build_model`; :func:`package` checks that the model rebuilt
    from these kwargs reproduces the run's outputs exactly.
    """
    accepted = accepted_kwargs(models.registry.get(cfg.model.name)) or set()
    shape = data.input_shape
    known: dict[str, Any] = {"num_classes": data.num_classes or 1, **getattr(data, "model_inputs", {})}
    if len(shape) == 3:
        known.update(in_channels=shape[0], image_size=shape[1])
    elif len(shape) == 1:
        known.update(in_features=shape[0], in_channels=shape[0], image_size=1)
    fill = {k: v for k, v in known.items() if k in accepted and k not in cfg.model.options}
    return {**fill, **cfg.model.options}


def package(
    run_ref: str,
    out: str | Path,
    *,
    runs_dir: str | Path | None = None,
    card: str | Path | None = None,
    max_profile_rows: int = 10_000,
) -> Path:
    """Package a finished run as a bundle file.

    Args:
        run_ref: a run id, unique prefix or ``latest``.
        out: the bundle file to write (a folder: ``<run name>.ember`` inside it).
        runs_dir: the run store (default ``$EMBER_RUNS`` or ``runs``).
        card: a model card (markdown) to include; default the run's ``card.md`` when it exists.
        max_profile_rows: training rows the reference profile is computed on, at most.

    Returns:
        The bundle's path. The bundle is opened again before returning and its model must reproduce
        the run's outputs exactly, so a bundle that cannot be loaded is never left behind.
    """
    from ember._version import __version__
    from ember.recipe import load_run_model

    prep, record = load_run_model(run_ref, runs_dir=runs_dir)
    if record.data_sha256 and prep.data_sha256 != record.data_sha256:
        raise BundleError(
            f"the data of run {record.id} changed since it trained (data sha256 {record.data_sha256[:12]} "
            f"then, {prep.data_sha256[:12]} now); its bundle would describe different data"
        )
    cfg, data, model = prep.config, prep.bundle, prep.model.eval()
    kwargs = model_kwargs(cfg, data)
    weights = (record.folder / WEIGHTS).read_bytes()
    store = RunStore(runs_dir)
    pool = data.train
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": cfg.name or record.name,
        "model": {
            "name": cfg.model.name,
            "kwargs": kwargs,
            "class": type(model).__name__,
            "parameters": sum(p.numel() for p in model.parameters()),
        },
        "task": cfg.task.name,
        "input_shape": list(data.input_shape),
        "input_dtype": "float32",
        "input_range": [0.0, 1.0] if len(data.input_shape) == 3 else None,
        "classes": data.classes,
        "num_classes": data.num_classes,
        "metrics": _metrics(store, record.id, record.summary),
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
        "data": {
            "dataset": cfg.data.name,
            "sha256": prep.data_sha256,
            "pool_sha256": fingerprint(pool.x, pool.y) if isinstance(pool, ArrayData) else None,
            "splits": {name: fingerprint_indices(idx) for name, idx in sorted(prep.splits.items())},
            "sizes": {name: len(idx) for name, idx in sorted(prep.splits.items())},
        },
        "environment": record.environment,
        "packaged_with": {
            "ember": __version__,
            "torch": torch.__version__.split("+")[0],
            "python": platform.python_version(),
        },
    }
    profile = build_profile(model, prep.train, task=cfg.task.name, max_rows=max_profile_rows)
    card_path = Path(card) if card is not None else record.folder / CARD
    if card is not None and not card_path.is_file():
        raise FileNotFoundError(f"model card {card_path} does not exist")
    text = card_path.read_text() if card_path.is_file() else None
    out = Path(out)
    if out.is_dir():
        out = out / f"{meta['name'] or 'model'}.ember"
    path = write_bundle(out, weights=weights, config=cfg, meta=meta, profile=profile, card=text)
    _check_round_trip(path, model, prep.train)
    return path


def write_bundle(
    out: str | Path,
    *,
    weights: bytes,
    config: Config,
    meta: dict[str, Any],
    profile: ReferenceProfile,
    card: str | None = None,
) -> Path:
    """Write a bundle from its parts (what :func:`package` does after gathering them from a run).

    Args:
        out: the bundle file (written atomically).
        weights: a safetensors file's bytes, loadable into ``models.create(meta["model"]["name"],
            **meta["model"]["kwargs"])``.
        config: the resolved config.
        meta: ``meta.json``; needs ``model.name``, ``model.kwargs`` and ``input_shape``.
        profile: the reference profile.
        card: the model card's markdown, or None.

    Returns:
        ``out`` as a Path.
    """
    model = meta.get("model") or {}
    if not isinstance(model.get("name"), str) or not isinstance(model.get("kwargs"), dict):
        raise BundleError("meta.json must name the model: {'model': {'name': ..., 'kwargs': {...}}}")
    if "input_shape" not in meta:
        raise BundleError("meta.json must give the input shape (without the batch): 'input_shape'")
    files = {
        WEIGHTS: weights,
        CONFIG: dump_yaml(config).encode(),
        META: (json.dumps(_jsonable(meta), indent=2, allow_nan=False) + "\n").encode(),
        PROFILE: profile.to_json().encode(),
    }
    if card is not None:
        files[CARD] = card.encode()
    path = Path(out)
    atomic_write_bytes(path, pack_archive(files, kind=FORMAT, version=FORMAT_VERSION))
    return path


def _check_round_trip(path: Path, model: nn.Module, train: Any) -> None:
    """The bundle must open and its model must give the run model's outputs, bit for bit."""
    x = train.x[:16] if isinstance(train, ArrayData) else torch.stack([train[i][0] for i in range(2)])
    reopened = open_bundle(path).model
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    with torch.no_grad():
        want, got = model(x.to(device)).cpu(), reopened(x)
    if not torch.equal(want, got):
        path.unlink(missing_ok=True)
        raise BundleError(
            f"the model rebuilt from {path.name} differs from the run's (max abs diff "
            f"{(want - got).abs().max().item():.3g}); its builder kwargs do not describe it. Bundle removed."
        )


def _metrics(store: RunStore, run_id: str, summary: dict[str, Any]) -> dict[str, float]:
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
    for name in REQUIRED:
        if name not in archive.files:
            raise BundleError(f"{what}: file '{name}' is missing")
    files = archive.files
    meta = _parse(what, META, lambda: json.loads(files[META]))
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), dict):
        raise BundleError(f"{what}: file '{META}' does not describe a model ('model': name + kwargs)")
    config = _parse(what, CONFIG, lambda: load_config(parse_yaml(files[CONFIG], source=CONFIG)))
    profile = _parse(what, PROFILE, lambda: ReferenceProfile.from_json(files[PROFILE]))
    model = _rebuild(what, meta["model"], files[WEIGHTS])
    return Bundle(
        model=model,
        meta=meta,
        config=config,
        profile=profile,
        input_shape=tuple(int(d) for d in meta.get("input_shape") or profile.input_shape),
        classes=meta.get("classes"),
        path=file,
        sha256=archive.sha256,
        card=files[CARD].decode() if CARD in files else None,
        files={name: entry["sha256"] for name, entry in manifest["files"].items()},
    )


def load(path: str | Path, *, registry: ModelRegistry | str | Path | None = None) -> nn.Module:
    """The model of a bundle (or registry reference), verified and rebuilt, in eval mode.

    Example:
        >>> model = ember.load("digits.ember")  # doctest: +SKIP
        >>> model = ember.load("digits-cnn@production")  # doctest: +SKIP
    """
    return open_bundle(path, registry=registry).model


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


def _rebuild(what: str, spec: dict[str, Any], weights: bytes) -> nn.Module:
    name, kwargs = spec.get("name"), spec.get("kwargs")
    if not isinstance(name, str) or not isinstance(kwargs, dict):
        raise BundleError(f"{what}: file '{META}' must give model.name and model.kwargs")
    try:
        model = models.create(name, **{k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()})
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError(
            f"{what}: file '{META}' names model '{name}' with kwargs this ember cannot build ({e}); "
            "it may need a newer ember"
        ) from None
    try:
        state = load_safetensors(weights)
        model.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError, ValueError) as e:
        raise BundleError(f"{what}: file '{WEIGHTS}' does not fit model '{name}': {e}") from None
    return model.eval()


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Bundle",
    "BundleError",
    "load",
    "model_kwargs",
    "open_bundle",
    "package",
    "write_bundle",
]
