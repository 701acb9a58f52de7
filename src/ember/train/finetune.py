"""Fine-tuning: start a new model from a pretrained one's weights, choose what trains, add LoRA.

- `load_pretrained(model, source)` copies every tensor whose name and shape match from a run (id,
  prefix, ``latest``, ``latest:NAME``), a run folder, or a ``.safetensors`` file (plain weights or an
  ember checkpoint) into ``model``, and returns a `LoadReport`: what was loaded, what the model has
  that the weights lack (``missing``: a new head keeps its fresh init), what the weights have that
  the model lacks (``unexpected``), and same-named tensors of another shape (``mismatched``, left as
  they were). A model with an ``adopt(tensors)`` method is offered the unexpected tensors and
  may use some (``adopted``: a text-conditioned U-Net aligns its phrase encoder to a
  class-conditional one's label table). Nothing is unpickled: weights are safetensors.
- `freeze(model, patterns)` / `unfreeze(model, patterns)` set ``requires_grad`` by name pattern
  (fnmatch; a module's name covers everything inside it: ``blocks.0``, ``head``, ``*``). The
  optimizer only ever sees trainable parameters, so frozen ones never move.
- Per-group learning rates are ``optim.lr_groups`` (`ember.train.optim.lr_param_groups`); LoRA is
  `ember.nn.lora`. `finetune_model` applies a config's ``model`` section (pretrained → lora →
  freeze → unfreeze) as ``ember train`` does; `MergeLoRA` folds the adapters in when training
  ends, so a LoRA run's ``model.safetensors`` is a plain model (its adapters alone are saved too).

Example:
    >>> import tempfile, torch
    >>> from safetensors.torch import save_file
    >>> from ember import models
    >>> lm = models.create("gpt_tiny", vocab_size=16)
    >>> path = tempfile.mkdtemp() + "/lm.safetensors"
    >>> save_file(lm.state_dict(), path)
    >>> classifier = models.create("gpt_classifier_tiny", vocab_size=16, num_classes=3)
    >>> report = load_pretrained(classifier, path)
    >>> report.missing, len(report.loaded) == len(lm.state_dict())
    (['head.weight', 'head.bias'], True)
    >>> frozen = freeze(classifier, ["*"]); trainable = unfreeze(classifier, ["head"])
    >>> trainable
    ['head.weight', 'head.bias']
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save
from torch import nn

from ember._io import atomic_write_bytes
from ember._patterns import matching, select
from ember.config import ModelConfig
from ember.nn import lora
from ember.track import RunStore
from ember.track.runs import RunNotFoundError, recorded_sha256
from ember.train import checkpoint as ckpt
from ember.train.sealed import WeightsError, read_safetensors
from ember.train.state import TrainState

__all__ = [
    "LoadReport",
    "MergeLoRA",
    "PretrainedError",
    "finetune_model",
    "freeze",
    "load_pretrained",
    "read_weights",
    "run_folder",
    "trainable_summary",
    "unfreeze",
]


class PretrainedError(ValueError):
    """Pretrained weights that cannot be found, read or used; the message says which and why."""


@dataclass
class LoadReport:
    """What `load_pretrained` did, by tensor name."""

    source: str
    """Where the weights came from (a run id and file, or a path)."""
    loaded: list[str] = field(default_factory=list)
    """Copied into the model."""
    missing: list[str] = field(default_factory=list)
    """The model has them, the weights do not: they keep the model's fresh initialisation."""
    unexpected: list[str] = field(default_factory=list)
    """The weights have them, the model does not (e.g. a language model's output layer)."""
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    """(name, shape in the weights, shape in the model): same name, other shape, not loaded."""
    ignored: list[str] = field(default_factory=list)
    """Matched an ``ignore`` pattern, so not loaded."""
    adopted: list[str] = field(default_factory=list)
    """Not in the model by name, but used by its ``adopt`` (a class table a phrase encoder is
    aligned to, `ember.models.diffusion_unet`)."""

    def summary(self) -> str:
        """A few lines for a person: counts, then the names that were not loaded."""
        lines = [f"loaded {len(self.loaded)} tensors from {self.source}"]
        if self.missing:
            lines.append(f"  new (not in the weights): {_names(self.missing)}")
        if self.mismatched:
            shown = ", ".join(f"{n} {list(a)} -> {list(b)}" for n, a, b in self.mismatched[:6])
            lines.append(
                f"  shape mismatch, not loaded: {shown}" + (" ..." if len(self.mismatched) > 6 else "")
            )
        if self.unexpected:
            lines.append(f"  unused (not in the model): {_names(self.unexpected)}")
        if self.ignored:
            lines.append(f"  ignored: {_names(self.ignored)}")
        if self.adopted:
            lines.append(f"  used by the model's own adoption: {_names(self.adopted)}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _names(names: Sequence[str], limit: int = 8) -> str:
    return ", ".join(names[:limit]) + (f" ... ({len(names)} in all)" if len(names) > limit else "")


# --------------------------------------------------------------------------- finding weights


def run_folder(source: str | Path, *, runs_dir: str | Path | None = None) -> Path | None:
    """The run folder ``source`` names (a folder, or a run in the store), or None for a file."""
    path = Path(source).expanduser()
    if path.is_file():
        return None
    if path.is_dir():
        return path
    try:
        return RunStore(runs_dir).get(str(source)).folder
    except RunNotFoundError:
        store = RunStore(runs_dir).root
        raise PretrainedError(
            f"pretrained weights '{source}': no such file or folder, and no run by that name in {store} "
            "(give a run id, prefix, latest or latest:NAME, a run folder, or a .safetensors file; "
            "`ember runs` lists the runs)"
        ) from None


def read_weights(
    source: str | Path, *, runs_dir: str | Path | None = None
) -> tuple[dict[str, torch.Tensor], str]:
    """``(name → tensor, description)`` of the model weights ``source`` holds.

    A run (or run folder) gives its final ``model.safetensors``, or, while it has none (still
    running, or stopped), its newest checkpoint's model. An ember checkpoint file gives its model
    part; any other ``.safetensors`` file its tensors as they are.
    """
    folder = run_folder(source, runs_dir=runs_dir)
    if folder is not None:
        weights = folder / "model.safetensors"
        if weights.is_file():  # checked against the sha256 its run recorded
            sha256 = recorded_sha256(folder, "model.safetensors")
            return _read_file(weights, sha256), f"{folder.name}/model.safetensors"
        latest = ckpt.latest_checkpoint(folder / "checkpoints")
        if latest is None:
            raise PretrainedError(
                f"run folder {folder} has no model.safetensors and no checkpoint to start from"
            )
        return latest.model, f"{folder.name}/checkpoints/{latest.path.name}"
    return _read_file(Path(source).expanduser()), str(source)


def _read_file(path: Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Every byte checked (:func:`ember.train.sealed.read_safetensors`): a damaged file is a
    PretrainedError naming it."""
    if not path.is_file():
        raise PretrainedError(f"{path} is not a readable .safetensors file: no such file")
    try:
        tensors, meta = read_safetensors(path, sha256=sha256)
    except WeightsError as e:
        raise PretrainedError(f"{path} is not a readable .safetensors file: {e}") from None
    if "ember" in meta:  # a checkpoint: model/..., optim/..., rng/... tensors plus JSON; the model part
        return {k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")}
    return tensors


# --------------------------------------------------------------------------- loading, freezing


def load_pretrained(
    model: nn.Module,
    source: str | Path | Mapping[str, torch.Tensor],
    *,
    runs_dir: str | Path | None = None,
    ignore: Sequence[str] = (),
) -> LoadReport:
    """Copy the tensors of ``source`` whose name and shape match into ``model`` (in place).

    Args:
        model: the new model (e.g. a classifier sharing a language model's trunk names).
        source: a run id / prefix / ``latest[:NAME]``, a run folder, a ``.safetensors`` file, or a
            ``state_dict``-like mapping.
        runs_dir: the run store run references are looked up in.
        ignore: name patterns never to load (e.g. ``["head"]`` for a head of other classes).

    Returns:
        The `LoadReport`; nothing raises over a mismatch, the caller decides what is acceptable.
    """
    if isinstance(source, Mapping):
        weights, where = dict(source), "a state dict"
    else:
        weights, where = read_weights(source, runs_dir=runs_dir)
    report = LoadReport(source=where)
    own = model.state_dict()
    skipped = set(matching(list(weights), list(ignore)))
    with torch.no_grad():
        for name, tensor in own.items():
            if name not in weights:
                report.missing.append(name)
            elif name in skipped:
                report.ignored.append(name)
            elif tuple(weights[name].shape) != tuple(tensor.shape):
                report.mismatched.append((name, tuple(weights[name].shape), tuple(tensor.shape)))
            else:
                tensor.copy_(weights[name])  # state_dict tensors share storage with the model's
                report.loaded.append(name)
    report.unexpected = [name for name in weights if name not in own and name not in skipped]
    adopt = getattr(model, "adopt", None)
    if callable(adopt) and report.unexpected:  # the model may use tensors no name of its matches
        report.adopted = list(adopt({name: weights[name] for name in report.unexpected}))
        report.unexpected = [name for name in report.unexpected if name not in report.adopted]
    return report


def freeze(model: nn.Module, patterns: Sequence[str] = ("*",)) -> list[str]:
    """Stop training the parameters whose names match ``patterns``; returns their names.

    Raises:
        ValueError: a pattern matches no parameter (a close name is suggested).
    """
    return _set_trainable(model, patterns, False, "freeze pattern")


def unfreeze(model: nn.Module, patterns: Sequence[str]) -> list[str]:
    """Train again the parameters whose names match ``patterns``; returns their names."""
    return _set_trainable(model, patterns, True, "unfreeze pattern")


def _set_trainable(model: nn.Module, patterns: Sequence[str], trainable: bool, what: str) -> list[str]:
    params = dict(model.named_parameters())
    chosen = select(list(params), patterns, what, among="parameter")
    for name in chosen:
        params[name].requires_grad_(trainable)
    return chosen


def trainable_summary(model: nn.Module) -> str:
    """``trainable 1,234 of 56,789 parameters (2.2%)``."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return f"trainable {trainable:,} of {total:,} parameters ({100 * trainable / max(total, 1):.1f}%)"


# --------------------------------------------------------------------------- a config's model section


def finetune_model(
    model: nn.Module, cfg: ModelConfig, *, runs_dir: str | Path | None = None, load: bool = True
) -> LoadReport | None:
    """Apply ``cfg``'s fine-tuning keys to ``model`` in place: pretrained → lora → freeze → unfreeze.

    Args:
        model: the model as built from ``cfg.name`` and its options.
        cfg: the config's ``model`` section.
        runs_dir: where run references in ``cfg.pretrained`` are looked up.
        load: load ``cfg.pretrained`` (False when resuming: the checkpoint holds the weights).

    Returns:
        The `LoadReport` when weights were loaded, else None.

    Raises:
        PretrainedError: the weights cannot be read, share no tensor with the model, or hold
            same-named tensors of other shapes (rebuild the model in their shape, or list them in
            ``model.pretrained_ignore``).
    """
    report = None
    if cfg.pretrained and load:
        report = load_pretrained(model, cfg.pretrained, runs_dir=runs_dir, ignore=cfg.pretrained_ignore)
        if not report.loaded:
            raise PretrainedError(
                f"model.pretrained={cfg.pretrained!r} shares no tensor (by name and shape) with model "
                f"'{cfg.name}':\n{report.summary()}\nIs it a run of the same model family?"
            )
        if report.mismatched:
            names = ", ".join(f"{n} {list(a)} vs {list(b)}" for n, a, b in report.mismatched[:6])
            raise PretrainedError(
                f"model.pretrained={cfg.pretrained!r} has tensors of other shapes than model '{cfg.name}': "
                f"{names}. Build the model in the pretrained shape (e.g. the same block_size, "
                "embed_dim, vocab), or skip them with model.pretrained_ignore."
            )
    if cfg.lora.rank:
        lora.apply(
            model,
            rank=cfg.lora.rank,
            alpha=cfg.lora.alpha,
            dropout=cfg.lora.dropout,
            targets=cfg.lora.targets,
        )
    if cfg.freeze:
        freeze(model, cfg.freeze)
    if cfg.unfreeze:
        unfreeze(model, cfg.unfreeze)
    return report


class MergeLoRA:
    """A callback: when training ends, save the adapters alone, then merge them into plain layers.

    So the run's final ``model.safetensors`` (written after ``on_fit_end``) is the un-adapted
    model's layout, which evaluation, packaging and export read like any other run's.

    Args:
        adapters: where to write the adapters' tensors (``None``: do not).
    """

    def __init__(self, adapters: Path | None = None) -> None:
        self.adapters = adapters

    def on_fit_end(self, state: TrainState) -> None:
        if not lora.lora_layers(state.model):
            return
        if self.adapters is not None:
            tensors = ckpt.safetensors_ready(lora.adapter_state_dict(state.model))
            meta = {"ember_lora": json.dumps({"layers": sorted(lora.lora_layers(state.model))})}
            atomic_write_bytes(self.adapters, save(tensors, metadata=meta))
        lora.merge(state.model)
