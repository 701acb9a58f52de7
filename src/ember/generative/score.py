"""``ember score``: how good are a generative run's samples, measured by a classifier trained apart.

The scorer is a classification run on the same data set (by default the most accurate completed one; see
``configs/mnist-classifier.yaml``). Its penultimate features are the space of every distance here:
a *domain* feature space, as FID papers on MNIST use, not Inception's (whose weights need a
download and describe photographs). Figures in it compare runs and baselines on one data set; they
are not comparable to published Inception FIDs.

For ``n`` samples (balanced over classes when the model takes labels) and ``n`` reference images
from the run's held-out test split:

- ``fd``: the Fréchet distance between Gaussians fitted to the two feature sets (torchmetrics'
  ``FrechetInceptionDistance`` with the scorer as its feature network).
- ``precision`` / ``recall``: improved precision and recall (Kynkäänniemi et al. 2019): the share
  of samples inside the reference set's k-NN balls, and of reference images inside the samples'.
- ``diversity``: mean feature distance between samples over that between reference images (below
  0.5: a mode-collapse warning).
- ``accuracy``: the scorer's accuracy on samples asked for a class (class-conditional models), per
  class too; for a text-conditioned model also on held-out paraphrases (``heldout_accuracy``).

Baselines on the same scale, each with ``n`` images: ``real`` (the validation split against the test
split: what a perfect model would score), ``mixture`` (`ember.generative.baselines.GaussianMixture`
fitted to the training split) and ``noise``.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ember._registry import did_you_mean
from ember.generative.baselines import GaussianMixture, uniform_noise
from ember.tasks.generative import balanced_labels

__all__ = ["ScoreReport", "features", "frechet_distance", "precision_recall", "score_run"]


@dataclass
class ScoreReport:
    """What `score_run` measured; ``rows`` maps a set (samples, real, mixture, noise) to its metrics."""

    run: str
    classifier: str
    n: int
    options: dict[str, Any]
    rows: dict[str, dict[str, float]]
    per_class: list[float] = field(default_factory=list)
    heldout_per_class: list[float] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Features(nn.Module):
    """A classifier's penultimate features (timm's ``forward_head(..., pre_logits=True)``)."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier
        self.num_features = int(classifier.num_features)  # type: ignore[arg-type]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.classifier.forward_features(images)  # type: ignore[operator]
        return self.classifier.forward_head(feats, pre_logits=True)  # type: ignore[operator]


@torch.inference_mode()
def features(
    classifier: nn.Module, images: torch.Tensor, *, batch_size: int = 500
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, F) penultimate features and (N, K) logits of ``images``, in eval mode, on the CPU."""
    classifier.eval()
    device = next(classifier.parameters()).device
    feats, logits = [], []
    for chunk in images.split(batch_size):
        h = classifier.forward_features(chunk.to(device))  # type: ignore[operator]
        feats.append(classifier.forward_head(h, pre_logits=True).float().cpu())  # type: ignore[operator]
        logits.append(classifier.forward_head(h).float().cpu())  # type: ignore[operator]
    return torch.cat(feats), torch.cat(logits)


class _Given(nn.Module):
    """Features computed already, handed to torchmetrics' FID as its "images"."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def frechet_distance(reference: torch.Tensor, samples: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to (N, F) and (M, F) feature sets (torchmetrics)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=_Given(reference.shape[1]), normalize=True)
    metric.update(reference.double(), real=True)
    metric.update(samples.double(), real=False)
    return float(metric.compute())


def _radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each point of (N, F) ``x`` to its k-th nearest other point."""
    return torch.cdist(x, x).kthvalue(k + 1, dim=1).values  # the nearest (0) is the point itself


def _covered(points: torch.Tensor, centers: torch.Tensor, radii: torch.Tensor) -> float:
    """Share of ``points`` inside at least one ball (center, radius)."""
    return float((torch.cdist(points, centers) <= radii[None]).any(dim=1).float().mean())


def precision_recall(reference: torch.Tensor, samples: torch.Tensor, *, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall of (M, F) ``samples`` against (N, F) ``reference`` features.

    Example:
        >>> x = torch.randn(200, 4, generator=torch.Generator().manual_seed(0))
        >>> precision_recall(x, x)
        (1.0, 1.0)
    """
    reference, samples = reference.double(), samples.double()
    precision = _covered(samples, reference, _radii(reference, k))
    recall = _covered(reference, samples, _radii(samples, k))
    return precision, recall


def _mean_distance(x: torch.Tensor) -> float:
    n = x.shape[0]
    return float(torch.cdist(x.double(), x.double()).sum() / max(n * (n - 1), 1))


def _row(reference: torch.Tensor, feats: torch.Tensor, ref_spread: float) -> dict[str, float]:
    precision, recall = precision_recall(reference, feats)
    return {
        "fd": frechet_distance(reference, feats),
        "precision": precision,
        "recall": recall,
        "diversity": _mean_distance(feats) / ref_spread,
    }


def _accuracy(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[float, list[float]]:
    hits = (logits.argmax(1) == labels).float()
    per_class = [float(hits[labels == k].mean()) for k in range(num_classes) if bool((labels == k).any())]
    return float(hits.mean()), per_class


def find_classifier(
    ref: str | None, data_name: str, shape: tuple[int, ...], *, runs_dir: str | Path | None
) -> str:
    """The scorer's run id: ``ref``, or the most accurate completed classification run on ``data_name``.

    Runs are ranked by their best validation accuracy (a differentially private model, or one
    trained briefly, is a weaker feature space than the data's own classifier recipe); runs whose
    headline is not an accuracy come after those that have one, and among equals the newest wins.
    """
    from ember.config import load_config
    from ember.track import RunStore

    store = RunStore(runs_dir)
    if ref is not None:
        return store.get(ref).id
    candidates = []
    for newest_first, record in enumerate(store.list()):
        if record.status != "completed" or not (record.folder / "model.safetensors").is_file():
            continue
        cfg = load_config(_yaml(record.config))
        if cfg.data.name == data_name and cfg.task.name == "classification":
            accurate = (record.headline or "").endswith("accuracy") and record.best is not None
            candidates.append((accurate, record.best if accurate else 0.0, -newest_first, record.id))
    if candidates:
        return max(candidates)[3]
    raise ValueError(
        f"no completed classification run on '{data_name}' to score with; train one first "
        f"(e.g. `ember train configs/mnist-classifier.yaml` for mnist-10k), or name one with --classifier"
    )


def _yaml(text: str) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(text) or {}


def check_options(sample: Any, options: dict[str, Any], run: str) -> None:
    """Raise ValueError naming an option that ``sample`` (a task's) does not take."""
    params = inspect.signature(sample).parameters
    takes = sorted(p for p in params if params[p].kind is inspect.Parameter.KEYWORD_ONLY)
    takes = [p for p in takes if p not in ("labels", "prompt", "generator")]
    for key in options:
        if key not in takes:
            hint = did_you_mean(key, takes)
            listed = ", ".join(f"--{t}" for t in takes) or "none"
            raise ValueError(f"run {run}'s sampler has no option --{key}{hint} It takes: {listed}.")


def sample_in_batches(
    task: Any,
    model: nn.Module,
    n: int,
    *,
    labels: torch.Tensor | None = None,
    prompts: list[str] | None = None,
    seed: int = 0,
    batch_size: int = 250,
    **options: Any,
) -> torch.Tensor:
    """``n`` samples from ``task.sample``, ``batch_size`` at a time, all from one seeded generator."""
    generator = torch.Generator(next(model.parameters()).device).manual_seed(seed)
    out = []
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        out.append(
            task.sample(
                model,
                stop - start,
                labels=None if labels is None else labels[start:stop],
                prompt=None if prompts is None else prompts[start:stop],
                generator=generator,
                **options,
            ).cpu()
        )
    return torch.cat(out)


def _pick(images: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    index = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
    return images[index]


def score_run(
    ref: str,
    *,
    classifier: str | None = None,
    n: int = 1000,
    seed: int = 0,
    batch_size: int = 250,
    runs_dir: str | Path | None = None,
    log: Any = None,
    **options: Any,
) -> ScoreReport:
    """Score a generative run's samples against the scorer's view of real data (module docstring).

    Args:
        ref: the generative run (id, prefix or ``latest``).
        classifier: the scorer run (default: the most accurate completed classification run on the data).
        n: samples, and reference images (fewer when a split has fewer).
        seed: the seed of the samples and of the baselines.
        batch_size: samples made at once.
        runs_dir: the run store.
        log: a callable given progress lines (None: quiet).
        **options: the sampler's options (a diffusion run's sampler, steps, eta, guidance).

    Returns:
        The `ScoreReport`; also written to the run folder as ``score.json`` and logged as
        ``score/*`` metrics.
    """
    import time

    from ember.recipe import build_task, load_run_model
    from ember.track import RunStore

    say = log or (lambda _: None)
    prep, record = load_run_model(ref, runs_dir=runs_dir)
    task: Any = build_task(prep.config, prep.bundle)
    if not callable(getattr(task, "sample", None)):
        raise ValueError(
            f"run {record.id} is a '{prep.config.task.name}' run: its task cannot sample images. ember score "
            "scores runs of the generative tasks (autoencoder with a VAE, gan, diffusion)"
        )
    check_options(task.sample, options, record.id)
    scorer_id = find_classifier(classifier, prep.config.data.name, prep.bundle.input_shape, runs_dir=runs_dir)
    scorer_prep, _ = load_run_model(scorer_id, runs_dir=runs_dir)
    if tuple(scorer_prep.bundle.input_shape) != tuple(prep.bundle.input_shape):
        raise ValueError(
            f"the classifier {scorer_id} reads {scorer_prep.bundle.input_shape} images, the run makes "
            f"{prep.bundle.input_shape}; name a classifier of the same data with --classifier"
        )
    scorer = scorer_prep.model
    model = prep.model.eval()
    reference: Any = prep.test if prep.test is not None else prep.val
    real: Any = prep.val if prep.test is not None else prep.train
    n = min(n, len(reference), len(real))
    ref_x, real_x = _pick(reference.x, n, seed), _pick(real.x, n, seed + 1)
    real_y = real.y[torch.randperm(len(real.x), generator=torch.Generator().manual_seed(seed + 1))[:n]]
    ref_feats, _ = features(scorer, ref_x)
    spread = _mean_distance(ref_feats)
    classes = int(task.sample_classes(model))
    labels = balanced_labels(n, classes) if classes else None

    seconds: dict[str, float] = {}
    say(f"sampling {n} images from {record.id} ...")
    started = time.perf_counter()
    samples = sample_in_batches(task, model, n, labels=labels, seed=seed, batch_size=batch_size, **options)
    seconds["samples"] = time.perf_counter() - started
    mixture = GaussianMixture.fit(prep.train.x, prep.train.y).sample(
        n, labels=labels, generator=torch.Generator().manual_seed(seed)
    )
    sets = {
        "samples": samples,
        "real": real_x,
        "mixture": mixture,
        "noise": uniform_noise(
            n, tuple(prep.bundle.input_shape), generator=torch.Generator().manual_seed(seed)
        ),
    }
    rows: dict[str, dict[str, float]] = {}
    per_class: list[float] = []
    for name, images in sets.items():
        feats, logits = features(scorer, images)
        rows[name] = _row(ref_feats, feats, spread)
        asked = real_y if name == "real" else labels
        if asked is not None and name != "noise":
            rows[name]["accuracy"], classwise = _accuracy(logits, asked, int(prep.bundle.num_classes or 0))
            per_class = classwise if name == "samples" else per_class
    heldout: list[float] = []
    prompts = task.prompts(model) if callable(getattr(task, "prompts", None)) else []
    if prompts:  # a text-conditioned model: each class asked for by its held-out paraphrases
        say(f"sampling {n} images from held-out paraphrases ...")
        per = max(1, n // len(prompts))
        chosen = [(k, p) for k, p in prompts for _ in range(per)]
        texts, asked = [p for _, p in chosen], torch.tensor([k for k, _ in chosen])
        images = sample_in_batches(
            task, model, len(texts), prompts=texts, seed=seed + 2, batch_size=batch_size, **options
        )
        _, logits = features(scorer, images)
        rows["samples"]["heldout_accuracy"], heldout = _accuracy(logits, asked, classes)
    report = ScoreReport(record.id, scorer_id, n, options, rows, per_class, heldout, seconds)
    (record.folder / "score.json").write_text(json.dumps(report.to_dict(), indent=1))
    run = RunStore(runs_dir).open(record.id)
    run.log({f"score/{k}": v for k, v in rows["samples"].items()}, step=0)
    run.flush()
    return report
