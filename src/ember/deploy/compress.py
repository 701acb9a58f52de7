"""Compression of a finished run, measured here: ``ember compress`` and what ``ember plan`` times.

Every run is read through :func:`ember.recipe.load_run` (from a config or from Python), and every
family question goes to its task (`ember.tasks.contract`):

- the model as tensors in and out (``export_module``) and valid example inputs (``example_inputs``)
  are what is timed and quantized, so a translator's two inputs or a detector's maps are timed as
  they are;
- the metric a variant must keep (``protected_metric``: accuracy, BLEU, mAP, mean IoU, MSE ...) is
  scored by the task's own evaluation on the run's held-out split, for every variant;
- a student learns from the teacher by the task's ``distill_loss``
  (:class:`~ember.deploy.distill.DistillationTask`).

Variants: torch dynamic int8, ONNX Runtime fp32 / dynamic int8 / static int8 (one-input models),
magnitude pruning (zeros), channel pruning fine-tuned with the run's recipe, and a half-width student
distilled from the teacher (recipe runs: their config builds the student). A technique that does
not apply is skipped with the reason, never a traceback.

Example:
    >>> import ember, tempfile
    >>> runs = tempfile.mkdtemp()
    >>> run = ember.fit("configs/digits-cnn.yaml", {"trainer.epochs": 1, "model.name": "cnn_tiny"},
    ...                 runs_dir=runs)  # doctest: +SKIP
    >>> result = compress_run(run.run_id, ["int8"], runs_dir=runs)  # doctest: +SKIP
    >>> [v.variant for v in result.variants][:2]  # doctest: +SKIP
    ['fp32', 'int8-dynamic']
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ember._io import atomic_write_bytes
from ember.data import ArrayData
from ember.deploy import bench
from ember.tasks import contract
from ember.tasks.spec import NotApplicable

TECHNIQUES = ("int8", "prune", "distill")
REPORT = "compress.json"


@dataclass
class CompressResult:
    """What ``compress_run`` measured, and where it wrote it."""

    run_id: str
    threads: int
    metric: str
    mode: str
    examples: int
    variants: list[bench.Comparison]
    skipped: dict[str, str] = field(default_factory=dict)
    runs: dict[str, str] = field(default_factory=dict)
    """Variant → the run that fine-tuned or distilled it."""
    path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run_id,
            "threads": self.threads,
            "metric": self.metric,
            "mode": self.mode,
            "examples": self.examples,
            "variants": [v.to_dict() for v in self.variants],
            "skipped": self.skipped,
            "runs": self.runs,
        }


def held_out(loaded: Any, *, limit: int = 4096) -> tuple[str, Any]:
    """The split variants are scored on: test, else validation, else (said in the report) train."""
    have = loaded.available_splits()
    for name in ("test", "val", "train"):
        if name in have:
            return name, loaded.eval_split(name, limit=limit)
    raise NotApplicable(
        f"run {loaded.id} kept no data split to score its variants on; train it with a validation or "
        "test split (or keep its data: Trainer(record_data=True))"
    )


def timing_inputs(loaded: Any, data: Any, n: int = 64) -> bench.Inputs:
    """The model's arguments for ``n`` examples: real held-out rows where the data is arrays, else
    the task's example inputs (valid ids, images, tables of the recorded shapes)."""
    if isinstance(data, ArrayData) and data.x.dim() > 1:
        return data.x[:n]
    example = contract.example_inputs(loaded.task, loaded.spec, n)
    return example[0] if len(example) == 1 else example


def score(model: nn.Module, data: Any, task: Any, metric: str, *, batch_size: int = 256) -> float | None:
    """``metric`` of ``model`` on ``data`` (a dataset or a ready loader) by the task's own
    evaluation; None when the evaluation leaves it undefined."""
    from torch.utils.data import DataLoader, Dataset

    from ember.data.loader import make_loader
    from ember.train.loop import evaluate

    rows = isinstance(data, ArrayData | Dataset) and not isinstance(data, DataLoader)
    loader = make_loader(data, batch_size=batch_size, shuffle=False) if rows else data  # else: a loader
    value = evaluate(model, loader, task).get(metric)
    return None if value is None else float(value)


def compress_run(
    ref: str,
    techniques: Sequence[str] = TECHNIQUES,
    *,
    amount: float = 0.5,
    epochs: int = 3,
    student: str | None = None,
    temperature: float = 4.0,
    alpha: float = 0.9,
    threads: int = 1,
    rounds: int = 5,
    round_s: float = 0.2,
    limit: int = 1000,
    runs_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> CompressResult:
    """Build the variants ``techniques`` give for run ``ref``, then score and time each here.

    ``limit`` caps the held-out examples each variant is scored on (a seeded subset: a translator's
    beam search over thousands of sentences, once per variant, takes long).

    Returns:
        The :class:`CompressResult`; also written to ``compress.json`` in the run folder.

    Raises:
        ValueError: an unknown technique.
        NotApplicable: the run kept no data to score variants on.
    """
    from ember.recipe import load_run

    if limit < 1:
        raise ValueError(f"--limit must be a positive number of examples, got {limit}")
    unknown = sorted(set(techniques) - set(TECHNIQUES))
    if unknown:
        raise ValueError(f"unknown technique(s) {', '.join(unknown)}; --try takes {', '.join(TECHNIQUES)}")
    say = log or (lambda _line: None)
    loaded = load_run(ref, runs_dir=runs_dir)
    task, spec = loaded.task, loaded.spec
    metric, mode = contract.protected_metric(task)
    split, data = held_out(loaded, limit=limit)
    scoring = loaded.scoring_task(split)
    example = timing_inputs(loaded, data)
    teacher = loaded.model.eval()
    workdir = Path(tempfile.mkdtemp(prefix="ember-compress-"))
    models, skipped, runs = _variants(
        loaded, teacher, list(techniques), example, workdir, say, threads,
        amount=amount, epochs=epochs, student=student, temperature=temperature, alpha=alpha,
    )  # fmt: skip
    say(f"scoring {len(models)} variants on {metric} ({split} split), timing at batch 1 and 64")
    scores: dict[str, float | None] = {}
    for name, model in models.items():
        try:
            scores[name] = score(model, data, scoring, metric) if isinstance(model, nn.Module) else None
        except Exception as e:  # an ONNX graph of a detector's maps cannot run the task's decoding
            scores[name] = None
            skipped.setdefault(f"{name} (score)", f"not scored: {type(e).__name__}: {e}")
    timed = {name: _timed(task, model, spec) for name, model in models.items()}
    results = bench.compare(
        timed, example, scores=scores, metric=metric, mode=mode, baseline="fp32",
        batch_sizes=(1, 64), threads=threads, rounds=rounds, round_s=round_s,
    )  # fmt: skip
    for r in results:  # sizes of the variants themselves (a wrapper adds no weights)
        r.size_bytes = bench.size_bytes(models[r.variant])
    n = _examples(data)
    result = CompressResult(loaded.id, threads, metric, mode, n, results, skipped, runs)
    result.path = loaded.record.folder / REPORT
    atomic_write_bytes(result.path, (json.dumps(result.to_dict(), indent=2) + "\n").encode())
    return result


def _examples(data: Any) -> int:
    """Examples in ``data``: a dataset's rows, a loader's dataset's (not its batches)."""
    for source in (getattr(data, "dataset", None), data):
        try:
            return len(source)  # type: ignore[arg-type]
        except TypeError:
            continue
    return 0


def _timed(task: Any, model: Any, spec: Any) -> Any:
    """What is timed: the task's tensors-in, tensors-out form of a module; an ONNX variant as it is."""
    return contract.export_module(task, model, spec) if isinstance(model, nn.Module) else model


def _variants(
    loaded: Any,
    teacher: nn.Module,
    techniques: list[str],
    example: bench.Inputs,
    workdir: Path,
    say: Callable[[str], None],
    threads: int,
    *,
    amount: float,
    epochs: int,
    student: str | None,
    temperature: float,
    alpha: float,
) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    from ember.deploy import prune, quantize

    variants: dict[str, Any] = {"fp32": teacher}
    skipped: dict[str, str] = {}
    runs: dict[str, str] = {}
    pct = round(100 * amount)
    one_input = isinstance(example, torch.Tensor)
    calibration = list(loaded_inputs(loaded, 512).split(64)) if one_input else []

    if "int8" in techniques:
        say("int8: torch dynamic, ONNX Runtime fp32 / dynamic int8 / static int8")
        try:
            variants["int8-dynamic"] = quantize.dynamic_int8(teacher)
        except ValueError as e:
            skipped["int8-dynamic"] = str(e)
        if not one_input:
            skipped["onnx"] = "the ONNX variants here take one input; this model takes several"
        elif not _same_module(loaded, teacher):
            skipped["onnx"] = (
                "the task's export form differs from the model's; `ember export` writes its graph"
            )
        else:
            try:
                assert isinstance(example, torch.Tensor)
                small = example[:8]
                variants["onnx-fp32"] = quantize.onnx_fp32(
                    teacher, small, workdir=workdir / "onnx", threads=threads
                )
                variants["onnx-int8-dynamic"] = quantize.onnx_int8(
                    teacher, small, workdir=workdir / "onnx", threads=threads
                )
                variants["onnx-int8-static"] = quantize.static_int8(
                    teacher, calibration, workdir=workdir / "static", threads=threads
                )
            except Exception as e:  # no onnxruntime, an op it cannot export...
                skipped["onnx"] = f"{type(e).__name__}: {e}"
    if "prune" in techniques:
        say(f"prune: magnitude {pct}%, channels {pct}% + {epochs} fine-tuning epochs")
        variants[f"prune-magnitude-{pct}"] = prune.magnitude(teacher, amount)
        try:
            if loaded.prepared is None or not one_input:
                raise ValueError(
                    "channel pruning fine-tunes with the run's recipe and one-input example rows; this run "
                    "has neither (prune-magnitude still applies)"
                )
            small_model = prune.channels(teacher, amount, example[:8])  # type: ignore[arg-type]
            # no config describes the pruned shapes, so `ember eval` could not rebuild this run: it goes
            # to a run store inside the original run's folder, where `latest` does not find it
            cfg = loaded.config
            name = f"{cfg.name or cfg.model.name}-pruned{pct}"
            store = str(loaded.record.folder / "compress-runs")
            runs[f"prune-channels-{pct}"] = _fit(small_model, cfg, loaded, epochs, name, runs_dir=store)
            variants[f"prune-channels-{pct}"] = small_model.eval()
        except ValueError as e:
            skipped[f"prune-channels-{pct}"] = str(e)
        except Exception as e:  # a model whose channel structure the pruner cannot follow
            skipped[f"prune-channels-{pct}"] = (
                f"channel pruning does not take this model: {type(e).__name__}: {e}"
            )
    if "distill" in techniques:
        from ember.deploy.distill import DistillationTask

        try:
            if loaded.prepared is None:
                raise ValueError(
                    "distillation builds the student from the run's recipe; this run was trained from Python "
                    "(use ember.deploy.distill.distill with your own student)"
                )
            contract.require(loaded.task, "distill_loss", "distillation", "use --try int8,prune")
            model, label, cfg = _student(loaded, student)
            say(f"distill: {label} student, {epochs} epochs, T={temperature}, alpha={alpha}")
            kd = DistillationTask(teacher, task=loaded.task, temperature=temperature, alpha=alpha)
            runs[f"distill-{label}"] = _fit(model, cfg, loaded, epochs, f"{label}-distilled", task=kd)
            variants[f"distill-{label}"] = model.eval()
        except (ValueError, NotApplicable) as e:
            skipped["distill"] = str(e)
    return variants, skipped, runs


def loaded_inputs(loaded: Any, n: int) -> torch.Tensor:
    """Up to ``n`` training inputs (for static int8 calibration); the task's examples without data."""
    try:
        data = loaded.eval_split("train", limit=n)
    except ValueError:
        data = None
    if isinstance(data, ArrayData):
        return data.x[:n]
    return contract.example_inputs(loaded.task, loaded.spec, min(n, 64))[0]


def _same_module(loaded: Any, model: nn.Module) -> bool:
    return contract.export_module(loaded.task, model, loaded.spec) is model


def _fit(
    model: nn.Module, cfg: Any, loaded: Any, epochs: int, name: str, *, task: Any = None, runs_dir: Any = None
) -> str:
    """Train ``model`` with ``cfg``'s recipe for ``epochs``, recorded like a recipe run (with its splits)."""
    from ember.data import save_splits
    from ember.train.trainer import Trainer

    prep = loaded.prepared
    options = {"task": task if task is not None else loaded.task}
    trainer = Trainer(
        model,
        config=cfg,
        epochs=epochs,
        name=name,
        runs_dir=runs_dir or loaded.store.root,
        progress=False,
        record_data=False,
        **options,
    )
    trainer.data_sha256 = prep.data_sha256
    save_splits(prep.splits, trainer.start_run().dir / "splits")
    return trainer.fit(prep.train, prep.val).run_id


def _student(loaded: Any, name: str | None) -> tuple[nn.Module, str, Any]:
    """(model, label, config) of the student: ``name`` from the zoo, or the teacher's family at half width."""
    from ember import models
    from ember.config import ModelConfig
    from ember.recipe import build_model

    cfg, bundle = loaded.config, loaded.prepared.bundle
    if name is not None:
        student_cfg = dataclasses.replace(cfg, model=ModelConfig(name=name, options={}))
        return build_model(student_cfg, bundle), name, student_cfg
    builder = models.registry.get(cfg.model.name)
    params = inspect.signature(builder).parameters
    for key in ("width", "embed_dim", "d_model", "hidden_size", "dim"):
        if key in params:
            current = cfg.model.options.get(key, params[key].default)
            if isinstance(current, int) and current >= 2:
                options = {**cfg.model.options, key: current // 2}
                student_cfg = dataclasses.replace(
                    cfg, model=ModelConfig(name=cfg.model.name, options=options)
                )
                return build_model(student_cfg, bundle), f"{cfg.model.name}-{key}{current // 2}", student_cfg
    raise ValueError(
        f"cannot make a smaller {cfg.model.name} by halving its width; name a student with --student MODEL"
    )


__all__ = ["REPORT", "TECHNIQUES", "CompressResult", "compress_run", "held_out", "score", "timing_inputs"]
