"""Per-example gradient norms and clipped sums, from each layer's input and output gradient.

DP-SGD clips every example's gradient to norm C before summing. Materializing B copies of every
weight gradient (Opacus's hooks, ``vmap(grad)``) costs memory and time; here each supported layer
keeps what autograd already has — its input ``a`` and the gradient ``g`` of its output — and
computes from them, per layer kind:

- the per-example squared norm of its weight and bias gradients, without materializing them where
  a closed form exists (a Linear layer on (B, d) inputs: ``|a_i|^2 |g_i|^2``), and
- the sum of the per-example gradients weighted by each example's clip factor, as one matmul
  (``(w * g)^T a``), so the clipped sum costs about one extra weight-gradient computation.

Conv layers materialize (B, C_out, C_in k k) per-example gradients from strided windows of the input (cheaper
than the "ghost" Gram-matrix norm whenever the output has more positions than C_out C_in k k /
(positions), as in every vision model here). The loss must be a mean over the batch's examples
(every ember task's is): example i's gradient is then B times its share of the batch gradient.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    >>> grads = PerExampleGradients(model)
    >>> model(torch.randn(5, 3)).square().mean().backward()
    >>> grads.norms().shape
    torch.Size([5])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

WeightedGrads = Callable[[torch.Tensor], dict[str, torch.Tensor]]


@dataclass
class _Use:
    """One forward call of a layer: its input and, after backward, its output gradient."""

    a: torch.Tensor
    g: torch.Tensor | None = None


@dataclass
class _Layer:
    name: str
    module: nn.Module
    params: dict[str, nn.Parameter]
    uses: list[_Use] = field(default_factory=list)


# ----------------------------------------------------------------------------- layer rules
# A rule takes (module, a, g) in fp32 and returns (squared norm per example (B,), weighted(w) → grads).


def _linear(module: nn.Linear, a: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, WeightedGrads]:
    if a.dim() == 2:  # (B, d), (B, p): |g_i a_i^T|^2 = |a_i|^2 |g_i|^2
        gg = g.square().sum(1)
        norms = a.square().sum(1) * gg + (gg if module.bias is not None else 0.0)

        def weighted(w: torch.Tensor) -> dict[str, torch.Tensor]:
            wg = g * w[:, None]
            return {"weight": wg.t() @ a, "bias": wg.sum(0)}

        return norms, weighted
    a, g = a.flatten(1, -2), g.flatten(1, -2)  # (B, T, d), (B, T, p)
    t, p, d = a.shape[1], g.shape[2], a.shape[2]
    if t * t < p * d:  # "ghost" norm through the T x T Gram matrices
        norms = (torch.bmm(a, a.transpose(1, 2)) * torch.bmm(g, g.transpose(1, 2))).sum((1, 2))
    else:
        norms = torch.bmm(g.transpose(1, 2), a).square().sum((1, 2))
    gb = g.sum(1)  # (B, p): the bias's per-example gradient
    if module.bias is not None:
        norms = norms + gb.square().sum(1)

    def weighted_seq(w: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"weight": torch.einsum("btp,btd->pd", g * w[:, None, None], a), "bias": w @ gb}

    return norms, weighted_seq


def _windows(
    a: torch.Tensor,
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
    out: tuple[int, ...],
) -> torch.Tensor:
    """(B, C, H, W) → a strided view (B, C, kh, kw, H', W') of every input window; no copy.

    ``F.unfold`` (im2col) materializes the same numbers and measured 30x slower on CPU here.
    """
    a = F.pad(a, (padding[1], padding[1], padding[0], padding[0])).contiguous()
    sb, sc, sh, sw = a.stride()
    shape = (a.shape[0], a.shape[1], kernel[0], kernel[1], out[0], out[1])
    strides = (sb, sc, sh * dilation[0], sw * dilation[1], sh * stride[0], sw * stride[1])
    return a.as_strided(shape, strides)


def _conv(
    module: nn.Conv1d | nn.Conv2d, a: torch.Tensor, g: torch.Tensor
) -> tuple[torch.Tensor, WeightedGrads]:
    if isinstance(module, nn.Conv1d):  # as a conv2d of height 1
        a, g = a.unsqueeze(2), g.unsqueeze(2)
        kernel, stride = (1, *module.kernel_size), (1, *module.stride)
        padding, dilation = (0, *module.padding), (1, *module.dilation)
    else:
        kernel, stride, padding, dilation = module.kernel_size, module.stride, module.padding, module.dilation  # type: ignore[assignment]
    groups = module.groups
    windows = _windows(a, kernel, stride, padding, dilation, tuple(g.shape[2:]))  # (B, C_in, kh, kw, H', W')
    windows = windows.unflatten(1, (groups, -1))  # (B, G, C_in/G, kh, kw, H', W')
    gout = g.unflatten(1, (groups, -1))  # (B, G, C_out/G, H', W')
    per_example = torch.einsum("bgckluv,bgouv->bgockl", windows, gout).flatten(
        3
    )  # (B, G, C_out/G, C_in/G kh kw)
    norms = per_example.square().sum((1, 2, 3))
    gb = g.flatten(2).sum(2)  # (B, C_out)
    if module.bias is not None:
        norms = norms + gb.square().sum(1)

    def weighted(w: torch.Tensor) -> dict[str, torch.Tensor]:
        weight = torch.einsum("b,bgpd->gpd", w, per_example).reshape(module.weight.shape)
        return {"weight": weight, "bias": w @ gb}

    return norms, weighted


def _affine_norm(
    module: nn.Module, normalized: torch.Tensor, g: torch.Tensor, reduce: tuple[int, ...]
) -> tuple[torch.Tensor, WeightedGrads]:
    gw = (g * normalized).sum(reduce) if reduce else g * normalized  # (B, *weight.shape)
    gb = g.sum(reduce) if reduce else g
    norms = gw.flatten(1).square().sum(1)
    if getattr(module, "bias", None) is not None:
        norms = norms + gb.flatten(1).square().sum(1)

    def weighted(w: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"weight": torch.tensordot(w, gw, 1), "bias": torch.tensordot(w, gb, 1)}

    return norms, weighted


def _group_norm(module: nn.GroupNorm, a: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, WeightedGrads]:
    normalized = F.group_norm(a, module.num_groups, eps=module.eps)  # (B, C, *)
    return _affine_norm(module, normalized, g, tuple(range(2, a.dim())))


def _layer_norm(module: nn.LayerNorm, a: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, WeightedGrads]:
    normalized = F.layer_norm(a, module.normalized_shape, eps=module.eps)
    inner = a.dim() - len(module.normalized_shape)
    return _affine_norm(module, normalized, g, tuple(range(1, inner)))


def _embedding(module: nn.Embedding, a: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, WeightedGrads]:
    ids, g = a.reshape(a.shape[0], -1), g.reshape(a.shape[0], -1, g.shape[-1])  # (B, T), (B, T, D)
    if module.padding_idx is not None:  # the padding row never gets a gradient
        g = g * (ids != module.padding_idx)[..., None]
    same = (ids[:, :, None] == ids[:, None, :]).to(g.dtype)  # rows that add into the same table row
    norms = (torch.bmm(g, g.transpose(1, 2)) * same).sum((1, 2))

    def weighted(w: torch.Tensor) -> dict[str, torch.Tensor]:
        out = torch.zeros_like(module.weight, dtype=g.dtype)
        out.index_add_(0, ids.flatten(), (g * w[:, None, None]).flatten(0, 1))
        return {"weight": out}

    return norms, weighted


RULES: dict[type, Callable[..., tuple[torch.Tensor, WeightedGrads]]] = {
    nn.Linear: _linear,
    nn.Conv1d: _conv,
    nn.Conv2d: _conv,
    nn.GroupNorm: _group_norm,
    nn.LayerNorm: _layer_norm,
    nn.Embedding: _embedding,
}


class UnsupportedLayerError(TypeError):
    """A trainable layer whose per-example gradients ember cannot compute."""


class PerExampleGradients:
    """Hooks on every trainable layer of ``model`` that keep what per-example clipping needs.

    Only training forwards with gradients enabled are recorded; evaluation costs nothing.

    Args:
        model: the network; every module that directly holds a trainable parameter must be one of
            :data:`RULES` (Linear, Conv1d, Conv2d, GroupNorm, LayerNorm, Embedding).

    Raises:
        UnsupportedLayerError: naming the layers that are not, and what to do.
    """

    def __init__(self, model: nn.Module) -> None:
        self.layers: list[_Layer] = []
        bad = []
        owner: dict[int, str] = {}
        for name, module in model.named_modules(remove_duplicate=False):
            params = {n: p for n, p in module.named_parameters(recurse=False) if p.requires_grad}
            if not params:
                continue
            shared = [f"{name}.{n} is {owner[id(p)]}" for n, p in params.items() if id(p) in owner]
            if shared:  # a tied weight's per-example gradient sums over both uses
                bad.append(f"{name} (tied parameters: {'; '.join(shared)})")
                continue
            owner.update({id(p): f"{name}.{n}" for n, p in params.items()})
            if type(module) not in RULES:
                bad.append(f"{name or 'the model'} ({type(module).__name__}: {', '.join(params)})")
                continue
            if type(module) is nn.Conv2d and (
                module.padding_mode != "zeros" or isinstance(module.padding, str)
            ):
                bad.append(f"{name} (Conv2d with padding {module.padding!r}, mode {module.padding_mode})")
                continue
            self.layers.append(_Layer(name, module, params))
        if bad:
            raise UnsupportedLayerError(
                "DP-SGD needs per-example gradients, which ember computes for "
                f"{', '.join(t.__name__ for t in RULES)} layers; these hold trainable parameters of another "
                f"kind: {'; '.join(bad)}. Freeze them (model.freeze) or build the model from supported layers."
            )
        self.handles = [layer.module.register_forward_hook(self._recorder(layer)) for layer in self.layers]

    @staticmethod
    def _recorder(layer: _Layer) -> Callable[..., None]:
        def record(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
            if not (module.training and torch.is_grad_enabled() and output.requires_grad):
                return
            use = _Use(inputs[0].detach())

            def keep(grad: torch.Tensor) -> None:
                use.g = grad.detach()

            output.register_hook(keep)
            layer.uses.append(use)

        return record

    def _rules(self) -> list[tuple[_Layer, torch.Tensor, WeightedGrads]]:
        out = []
        for layer in self.layers:
            done = [use for use in layer.uses if use.g is not None]
            if not done:
                continue  # not reached by this loss (a frozen branch)
            if len(done) > 1:
                raise RuntimeError(
                    f"layer {layer.name} ran {len(done)} times before one optimizer step (a layer used "
                    "twice, or gradient accumulation); DP-SGD clips one forward per step"
                )
            use = done[0]
            assert use.g is not None
            a = use.a.float() if use.a.is_floating_point() else use.a  # embedding ids stay integers
            norms, weighted = RULES[type(layer.module)](layer.module, a, use.g.float())
            out.append((layer, norms, weighted))
        return out

    def norms(self) -> torch.Tensor:
        """Per-example gradient L2 norms (B,) of the last backward, for a loss that is a batch mean."""
        rules = self._rules()
        squared = torch.stack([norms for _, norms, _ in rules]).sum(0)
        return squared.sqrt() * squared.shape[0]

    def clipped_sum(self, max_norm: float) -> tuple[dict[nn.Parameter, torch.Tensor], torch.Tensor]:
        """The sum over examples of each gradient clipped to ``max_norm``, per parameter; and the norms.

        Clears what was recorded, ready for the next step.
        """
        rules = self._rules()
        if not rules:
            self.clear()
            return {}, torch.zeros(0)
        squared = torch.stack([norms for _, norms, _ in rules]).sum(0)
        batch = squared.shape[0]
        norms = squared.sqrt() * batch  # example i's own gradient is B x its share of the mean's
        weights = (max_norm / (norms + 1e-6)).clamp(max=1.0) * batch
        grads: dict[nn.Parameter, torch.Tensor] = {}
        for layer, _, weighted in rules:
            for pname, grad in weighted(weights).items():
                if pname in layer.params:
                    grads[layer.params[pname]] = grad
        self.clear()
        return grads, norms

    def clear(self) -> None:
        for layer in self.layers:
            layer.uses.clear()

    def remove(self) -> None:
        """Take the hooks off the model."""
        self.clear()
        for handle in self.handles:
            handle.remove()
        self.handles = []


__all__ = ["RULES", "PerExampleGradients", "UnsupportedLayerError"]
