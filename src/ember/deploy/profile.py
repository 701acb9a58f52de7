"""The reference profile: what the training inputs and the model's outputs looked like, for drift.

Computed once at package time from the training split and stored in the bundle as ``profile.json``.
Monitoring applies the *same* :meth:`ReferenceProfile.features` to live inputs and compares:

- **inputs**, summarized as a few pooled features so the profile stays small: for images the mean
  intensity of each channel plus a 4x4 average-pooled grid per channel (``C + 16 C`` features); for
  tables the columns themselves (average-pooled down to 64 when there are more). Per feature: mean,
  std, min, max, quantiles, and decile bins with the training fraction in each (for PSI), plus a
  sample of up to ``sample_size`` rows (for two-sample KS).
- **embeddings**: up to ``sample_size`` vectors of the model's penultimate features
  (``forward_head(forward_features(x), pre_logits=True)`` when the model has timm's split, else its
  outputs when they are at most :data:`MAX_EMBEDDING` wide; none otherwise), for MMD.
- **predictions**: the predicted-class histogram (a classifier) or the quantiles of each output
  (when there are at most :data:`MAX_QUANTILE_OUTPUTS`). A model returning a tuple of tensors (a
  detector's maps, through its task's ``export_module``) is profiled on its first.

Numbers are float32 values stored exactly (shortest round-trip text), so ``from_json(to_json())``
gives back the same profile.

Example:
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    >>> x = torch.rand(100, 1, 8, 8)
    >>> profile = build_profile(model, x, task="classification")
    >>> profile.features(x[:5]).shape
    torch.Size([5, 17])
    >>> bool(profile.psi(profile.features(x)).max() < 0.05)
    True
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PROFILE_VERSION = 1
GRID = 4  # images: a GRID x GRID average-pooled map per channel
MAX_TABLE_FEATURES = 64
MAX_EMBEDDING = 256  # wider outputs (a segmenter's per-pixel logits) are not kept as embeddings
MAX_QUANTILE_OUTPUTS = 64
PROFILED_KINDS = ("image", "table")
"""Input kinds (``InputSpec.kind``) whose features a profile summarizes."""
QUANTILES = [i / 100 for i in range(101)]  # 0, 0.01, ..., 1 (for KS from quantiles)
BINS = 10  # decile bins for PSI
PSI_EPS = 1e-4  # floor of a bin's fraction, so an empty bin gives a large but finite PSI


@dataclass
class ReferenceProfile:
    """Summary of the training inputs, embeddings and predictions (see the module docstring)."""

    version: int
    input_shape: list[int]
    """Shape of one input, without the batch: ``[C, H, W]`` for images, ``[F]`` for tables."""
    feature_names: list[str]
    """One name per pooled feature (``mean_c0``, ``grid_c0_r1_c2`` ..., or ``col3``)."""
    rows: int
    """Training rows the statistics were computed on."""
    mean: list[float]
    std: list[float]
    min: list[float]
    max: list[float]
    quantiles: list[float]
    """Probability levels of ``quantile_values``."""
    quantile_values: list[list[float]]
    """Per feature, the value at each level of ``quantiles``."""
    bin_edges: list[list[float]]
    """Per feature, the ``BINS - 1`` inner edges (training deciles); bin i holds edges[i-1] < v <= edges[i]."""
    bin_fractions: list[list[float]]
    """Per feature, the training fraction in each of the ``BINS`` bins."""
    feature_sample: list[list[float]]
    """Up to ``sample_size`` rows of features, for KS tests."""
    embedding_kind: str
    """``pre_logits`` (penultimate features), ``outputs`` (the model's outputs) or ``none``."""
    embedding_sample: list[list[float]]
    """Up to ``sample_size`` embedding vectors of the same rows, for MMD."""
    task: str
    prediction_histogram: list[float] | None
    """A classifier: the fraction of training rows predicted as each class."""
    prediction_quantiles: list[list[float]] | None
    """Other models with few outputs: per output, its value at each level of ``quantiles``."""

    # ------------------------------------------------------------------ the shared feature map

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled input features of a batch: the function the profile was computed with.

        Args:
            x: inputs shaped like the training data, ``(B, *input_shape)``.

        Returns:
            float32 ``(B, len(feature_names))``.
        """
        expected = tuple(self.input_shape)
        if tuple(x.shape[1:]) != expected:
            raise ValueError(f"inputs of shape {tuple(x.shape)} do not match the profile's (B, *{expected})")
        return input_features(x)

    # ------------------------------------------------------------------ drift statistics

    def psi(self, feats: torch.Tensor) -> torch.Tensor:
        """Population stability index of each feature of live ``feats`` against training, ``(F,)``.

        Rule of thumb: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 large shift.
        """
        live = _bin_fractions(feats.float(), torch.tensor(self.bin_edges, dtype=torch.float32))
        ref = torch.tensor(self.bin_fractions, dtype=torch.float32)
        live, ref = live.clamp_min(PSI_EPS), ref.clamp_min(PSI_EPS)
        return ((live - ref) * (live / ref).log()).sum(dim=1)

    def ks(self, feats: torch.Tensor) -> torch.Tensor:
        """Two-sample Kolmogorov-Smirnov statistic of each feature against the stored sample, ``(F,)``."""
        ref = torch.tensor(self.feature_sample, dtype=torch.float32)
        return ks_statistic(ref, feats.float())

    # ------------------------------------------------------------------ JSON

    def to_json(self) -> str:
        """The profile as JSON text (as stored in a bundle's ``profile.json``)."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> ReferenceProfile:
        """Read a profile written by :meth:`to_json`; a missing or unknown key is a ValueError."""
        raw = json.loads(text)
        names = {f.name for f in fields(cls)}
        if not isinstance(raw, dict) or set(raw) != names:
            got = set(raw) if isinstance(raw, dict) else set()
            raise ValueError(
                f"not a reference profile: missing {sorted(names - got)}, unexpected {sorted(got - names)}"
            )
        if raw["version"] > PROFILE_VERSION:
            raise ValueError(
                f"profile version {raw['version']} is newer than this ember reads; upgrade ember"
            )
        return cls(**raw)


def input_features(x: torch.Tensor) -> torch.Tensor:
    """Images ``(B, C, H, W)`` → ``(B, C + 16 C)``: channel means then a 4x4 pooled grid per channel.

    Tables ``(B, F)`` → ``(B, min(F, 64))``: the columns, average-pooled when there are more than 64.
    """
    x = x.detach().float()
    if x.ndim == 4:
        means = x.mean(dim=(2, 3))  # (B, C)
        grid = F.adaptive_avg_pool2d(x, GRID).flatten(1)  # (B, C * 16), channel-major
        return torch.cat([means, grid], dim=1)
    if x.ndim == 2:
        if x.shape[1] <= MAX_TABLE_FEATURES:
            return x.clone()
        return F.adaptive_avg_pool1d(x[:, None], MAX_TABLE_FEATURES)[:, 0]
    raise ValueError(f"profiles summarize images (B, C, H, W) or tables (B, F); got shape {tuple(x.shape)}")


def feature_names(input_shape: tuple[int, ...] | list[int]) -> list[str]:
    """Names of :func:`input_features`' columns for inputs of ``input_shape``."""
    if len(input_shape) == 3:
        c = input_shape[0]
        grid = [f"grid_c{k}_r{i}_c{j}" for k in range(c) for i in range(GRID) for j in range(GRID)]
        return [f"mean_c{k}" for k in range(c)] + grid
    n = input_shape[0]
    return [f"col{i}" for i in range(n)] if n <= MAX_TABLE_FEATURES else [f"pool{i}" for i in range(64)]


@torch.no_grad()
def embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The embedding a profile stores: penultimate features when the model has them, else outputs
    (the first, for a model returning several).

    Returns:
        ``(B, D)`` float32.
    """
    if has_pre_logits(model):
        out = model.forward_head(model.forward_features(x), pre_logits=True)  # type: ignore[operator]
    else:
        out = first_output(model(x))
    return out.float().flatten(1)


def has_pre_logits(model: nn.Module) -> bool:
    """The model has timm's split: ``forward_features`` and a ``forward_head`` taking ``pre_logits``."""
    import inspect

    head = getattr(model, "forward_head", None)
    if not callable(getattr(model, "forward_features", None)) or not callable(head):
        return False
    try:
        return "pre_logits" in inspect.signature(head).parameters
    except (TypeError, ValueError):
        return False


def first_output(out: Any) -> torch.Tensor:
    """A model's output tensor, or the first of a tuple of them."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, list | tuple) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise ValueError(f"profiles read models returning tensors (or tuples of them); got {type(out).__name__}")


def ks_statistic(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Two-sample KS statistic per column of ``a`` ``(N, F)`` and ``b`` ``(M, F)``: max |CDF_a - CDF_b|."""
    a_sorted, _ = a.sort(dim=0)
    b_sorted, _ = b.sort(dim=0)
    points = torch.cat([a_sorted, b_sorted], dim=0).T.contiguous()  # (F, N + M)
    cdf_a = torch.searchsorted(a_sorted.T.contiguous(), points, right=True) / a.shape[0]
    cdf_b = torch.searchsorted(b_sorted.T.contiguous(), points, right=True) / b.shape[0]
    return (cdf_a - cdf_b).abs().max(dim=1).values


def _bin_fractions(feats: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    # feats (N, F), edges (F, BINS - 1) -> fractions (F, BINS)
    counts = torch.zeros(edges.shape[0], edges.shape[1] + 1)
    for j in range(edges.shape[0]):
        index = torch.bucketize(feats[:, j].contiguous(), edges[j].contiguous())
        counts[j] = torch.bincount(index, minlength=edges.shape[1] + 1).float()
    return counts / max(1, feats.shape[0])


def _exact(t: torch.Tensor) -> Any:
    """float32 values as Python floats that print short and read back to the same float32."""
    array = t.detach().cpu().float().numpy()
    flat = [float(str(v)) for v in array.reshape(-1)]
    return np.asarray(flat, dtype=np.float64).reshape(array.shape).tolist()


def _rows(data: Any, index: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Inputs of ``data`` at ``index``, in batches: a tensor, ArrayData, or any (x, y) dataset."""
    x_all = data if isinstance(data, torch.Tensor) else getattr(data, "x", None)
    for start in range(0, len(index), batch_size):
        chunk = index[start : start + batch_size]
        if isinstance(x_all, torch.Tensor):
            yield x_all[chunk]
        else:
            yield torch.stack([torch.as_tensor(data[int(i)][0]) for i in chunk])


def build_profile(
    model: nn.Module,
    data: Any,
    *,
    task: str = "classification",
    classifier: bool = True,
    max_rows: int = 10_000,
    sample_size: int = 500,
    batch_size: int = 512,
    seed: int = 0,
) -> ReferenceProfile:
    """Profile the training inputs, the model's embeddings and its predictions.

    Args:
        model: the trained model (run in eval mode; its mode is restored afterwards).
        data: the training split: a tensor of inputs, ``ArrayData``, or a dataset of ``(x, y)``.
        task: the task's name, recorded in the profile.
        classifier: its outputs are class scores (a predicted-class histogram is kept), else output
            quantiles are.
        max_rows: profile a seeded random subset when the split is larger (bounds packaging time).
        sample_size: rows kept as the feature and embedding samples.
        batch_size: rows per forward pass.
        seed: seed of the subsets.

    Returns:
        The :class:`ReferenceProfile`.
    """
    n = len(data)
    if n == 0:
        raise ValueError("cannot profile an empty training split")
    g = torch.Generator().manual_seed(seed)
    index = torch.randperm(n, generator=g)[:max_rows].sort().values if n > max_rows else torch.arange(n)
    keep = torch.zeros(len(index), dtype=torch.bool)
    keep[torch.randperm(len(index), generator=g)[:sample_size]] = True
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    pre_logits = has_pre_logits(model)
    feats, embeds, outputs = [], [], []
    shape: tuple[int, ...] = ()
    try:
        for start, x in zip(range(0, len(index), batch_size), _rows(data, index, batch_size)):
            shape = tuple(x.shape[1:])
            mask = keep[start : start + len(x)]
            feats.append(input_features(x))
            x = x.to(device)
            with torch.no_grad():
                out = first_output(model(x)).float().cpu()
            if out.ndim <= 2:  # (B,) or (B, K): predictions to summarize; maps (B, K, H, W) are not
                outputs.append(out.reshape(len(out), -1))
            if mask.any() and (pre_logits or out[0].numel() <= MAX_EMBEDDING):
                embeds.append(embed(model, x[mask.to(device)]).cpu() if pre_logits else out[mask].flatten(1))
    finally:
        model.train(was_training)
    f = torch.cat(feats)  # (N, F)
    scores = torch.cat(outputs) if outputs else None  # (N, K)
    q = torch.tensor(QUANTILES)
    qv = torch.quantile(f, q, dim=0).T  # (F, Q)
    edges = torch.tensor(_exact(torch.quantile(f, torch.linspace(0, 1, BINS + 1)[1:-1], dim=0).T))
    hist = quantiles = None
    if scores is not None and classifier and scores.shape[1] > 1:  # the predicted-class histogram
        hist = torch.bincount(scores.argmax(dim=1), minlength=scores.shape[1]) / len(scores)
    elif scores is not None and scores.shape[1] <= MAX_QUANTILE_OUTPUTS:
        quantiles = torch.quantile(scores, q, dim=0).T
    return ReferenceProfile(
        version=PROFILE_VERSION,
        input_shape=list(shape),
        feature_names=feature_names(shape),
        rows=len(f),
        mean=_exact(f.mean(dim=0)),
        std=_exact(f.std(dim=0, correction=0)),
        min=_exact(f.min(dim=0).values),
        max=_exact(f.max(dim=0).values),
        quantiles=QUANTILES,
        quantile_values=_exact(qv),
        bin_edges=_exact(edges),
        bin_fractions=_exact(_bin_fractions(f, edges.float())),
        feature_sample=_exact(f[keep]),
        embedding_kind="pre_logits" if pre_logits else "outputs" if embeds else "none",
        embedding_sample=_exact(torch.cat(embeds)) if embeds else [],
        task=task,
        prediction_histogram=_exact(hist) if hist is not None else None,
        prediction_quantiles=_exact(quantiles) if quantiles is not None else None,
    )


__all__ = [
    "PROFILED_KINDS",
    "ReferenceProfile",
    "build_profile",
    "embed",
    "feature_names",
    "first_output",
    "has_pre_logits",
    "input_features",
    "ks_statistic",
]
