"""Pruning, each a function model → model (the input model is never changed).

- :func:`magnitude`: zero the smallest-magnitude weights (globally across Linear/Conv layers).
  The tensors keep their shapes, so dense kernels run exactly as fast as before; it buys
  sparsity (for compression, or sparse kernels elsewhere), not speed on this CPU.
- :func:`channels`: structured pruning that **removes** whole conv channels (and hidden units of
  Linear layers): the layers come back smaller, so the model is smaller and faster. Which
  channels can go is read off the model's ``torch.fx`` graph: a producer (``Conv2d`` with
  ``groups=1``, or ``Linear``) whose output reaches only channel-wise layers (BatchNorm,
  activations, pooling, dropout, depthwise convs) and then consumers that read channels
  (``Conv2d``, or a ``Linear`` after global pooling). Outputs feeding a residual add, a concat, a
  gate or the model's output are left alone. The channels kept are those with the largest
  L1 norm of their filter times the following BatchNorm's scale.

Removing channels changes the function: fine-tune afterwards (a few epochs of the normal
``ember.Trainer`` recover most accuracy; ``ember compress`` does).

Example:
    >>> import torch
    >>> from ember.models import create
    >>> model = create("cnn_tiny", in_channels=1, image_size=8).eval()
    >>> small = channels(model, 0.5, torch.rand(2, 1, 8, 8))
    >>> small.features[0].conv.out_channels, model.features[0].conv.out_channels
    (4, 8)
    >>> small(torch.rand(3, 1, 8, 8)).shape
    torch.Size([3, 10])
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.utils import prune as torch_prune

PRUNABLE: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

# Modules and functions that act on each channel separately and keep the channel count.
_PASS_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
    nn.LeakyReLU,
    nn.ELU,
    nn.Mish,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
    nn.MaxPool2d,
    nn.AvgPool2d,
)
_PASS_FUNCTIONS = {
    F.relu,
    F.relu6,
    F.gelu,
    F.silu,
    F.hardswish,
    F.leaky_relu,
    F.dropout,
    F.max_pool2d,
    F.avg_pool2d,
    torch.relu,
    torch.sigmoid,
    torch.tanh,
}
_PASS_METHODS = {"relu", "sigmoid", "tanh", "contiguous"}


def magnitude(
    model: nn.Module, amount: float, *, layers: Iterable[type[nn.Module]] = PRUNABLE, per_layer: bool = False
) -> nn.Module:
    """Zero the fraction ``amount`` of weights with the smallest magnitude, in a copy of ``model``.

    Args:
        model: any module; the ``weight`` of its Linear/Conv layers is pruned (biases are not).
        amount: fraction of weights to zero, in [0, 1).
        layers: the layer types whose weights are pruned.
        per_layer: prune ``amount`` of each layer (default: the smallest weights over all layers,
            so layers with many small weights lose more).

    Returns:
        A new module whose pruned weights are plain tensors with zeros (no masks or hooks left).
    """
    _check_amount(amount)
    pruned = copy.deepcopy(model)
    targets = [(m, "weight") for m in pruned.modules() if isinstance(m, tuple(layers))]
    if not targets:
        raise ValueError(f"magnitude found no {', '.join(t.__name__ for t in layers)} layer to prune")
    for module, name in targets:  # channels-last convolutions: torch's pruning views weights flat
        weight = getattr(module, name)
        if not weight.is_contiguous():
            weight.data = weight.data.contiguous()
    if per_layer:
        for module, name in targets:
            torch_prune.l1_unstructured(module, name, amount=amount)
    else:
        torch_prune.global_unstructured(targets, pruning_method=torch_prune.L1Unstructured, amount=amount)
    for module, name in targets:
        torch_prune.remove(module, name)
    return pruned


def sparsity(model: nn.Module, *, layers: Iterable[type[nn.Module]] = PRUNABLE) -> float:
    """Fraction of exactly-zero weights over the Linear/Conv layers of ``model``."""
    weights = [_weight(m) for m in model.modules() if isinstance(m, tuple(layers))]
    total = sum(w.numel() for w in weights)
    return sum(int(torch.count_nonzero(w == 0)) for w in weights) / max(1, total)


def _weight(module: nn.Module) -> torch.Tensor:
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{type(module).__name__} has no weight tensor")
    return weight


@dataclass
class _Group:
    """One producer, the channel-wise layers after it, and the layers that read its channels."""

    producer: nn.Module
    slices: list[nn.Module] = field(default_factory=list)  # BatchNorm / depthwise conv: slice all
    consumers: list[nn.Module] = field(default_factory=list)  # Conv / Linear: slice input channels


def channels(model: nn.Module, amount: float, example: torch.Tensor) -> nn.Module:
    """Remove the fraction ``amount`` of output channels of every prunable layer, in a copy of ``model``.

    Args:
        model: a model ``torch.fx`` can trace (ember's CNN, ResNet, MobileNet do), or one whose
            direct children can be traced.
        amount: fraction of each prunable layer's channels to remove, in [0, 1); at least one
            channel always stays.
        example: an input batch; the pruned model is run on it to check its output shape.

    Returns:
        A new, smaller module in the mode ``model`` was in: the same class with smaller layers.

    Raises:
        ValueError: no layer can be pruned (the message says why).
    """
    _check_amount(amount)
    pruned = copy.deepcopy(model)
    graphs = _trace(pruned)
    groups = [g for graph in graphs for g in _groups(graph)]
    if not groups:
        raise ValueError(
            f"channels found nothing to prune in {type(model).__name__}: no Conv2d/Linear output reaches only "
            "channel-wise layers and then another Conv2d/Linear (residual adds, concats and the model output "
            "pin channels)"
        )
    keeps = [(g, _keep(g, amount)) for g in groups]  # all decided on the original weights first
    with torch.no_grad():
        for group, keep in keeps:
            _slice_out(group.producer, keep)
            for module in group.slices:
                _slice_all(module, keep)
            for module in group.consumers:
                _slice_in(module, keep)
        was_training = model.training
        model.eval()
        pruned.eval()
        want, got = model(example), pruned(example)
        model.train(was_training)
        pruned.train(was_training)
    if want.shape != got.shape:
        raise RuntimeError(
            f"channel pruning changed the output shape {tuple(want.shape)} -> {tuple(got.shape)}"
        )
    return pruned


def _check_amount(amount: float) -> None:
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"amount is the fraction to prune, in [0, 1); got {amount}")


def _trace(model: nn.Module) -> list[fx.GraphModule]:
    """The fx graph of ``model``, or of each of its direct children when the whole does not trace."""
    try:
        return [fx.symbolic_trace(model)]
    except Exception as whole:  # fx raises many kinds on data-dependent Python
        graphs = []
        for child in model.children():
            try:
                graphs.append(fx.symbolic_trace(child))
            except Exception:
                continue
        if not graphs:
            raise ValueError(
                f"channels needs a model torch.fx can trace; {type(model).__name__} cannot be ({whole})"
            ) from None
        return graphs


def _groups(gm: fx.GraphModule) -> list[_Group]:
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    groups = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or calls[node.target] != 1:
            continue
        module = gm.get_submodule(node.target)
        conv = isinstance(module, nn.Conv2d) and module.groups == 1
        if not (conv or isinstance(module, nn.Linear)) or _weight(module).shape[0] < 2:
            continue
        group = _Group(module)
        if _walk(gm, node, group, spatial=conv, calls=calls) and group.consumers:
            groups.append(group)
    return groups


def _walk(gm: fx.GraphModule, node: fx.Node, group: _Group, *, spatial: bool, calls: dict[str, int]) -> bool:
    """Follow every use of ``node``'s channels; False when one reaches something that pins them."""
    for user in node.users:
        if user.op == "call_module" and calls.get(user.target, 0) == 1:  # type: ignore[arg-type]
            module = gm.get_submodule(user.target)  # type: ignore[arg-type]
            if user.args[0] is not node or len(user.args) + len(user.kwargs) > 1:
                return False
            if isinstance(module, nn.Conv2d) and spatial and module.groups == 1:
                group.consumers.append(module)
                continue
            if isinstance(module, nn.Linear) and not spatial:
                group.consumers.append(module)
                continue
            if isinstance(module, nn.BatchNorm2d if spatial else nn.BatchNorm1d):
                group.slices.append(module)
            elif (
                isinstance(module, nn.Conv2d)
                and spatial
                and module.groups == module.in_channels == module.out_channels
            ):
                group.slices.append(module)  # depthwise: one filter per channel
            elif isinstance(module, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d) and spatial:
                size = module.output_size
                if size not in (1, (1, 1)):
                    return False
                if not _walk_pooled(gm, user, group, calls=calls):
                    return False
                continue
            elif not isinstance(module, _PASS_MODULES):
                return False
            if not _walk(gm, user, group, spatial=spatial, calls=calls):
                return False
        elif _passes(user, node):
            if not _walk(gm, user, group, spatial=spatial, calls=calls):
                return False
        elif spatial and _is_global_mean(user, node):
            if not _walk(gm, user, group, spatial=False, calls=calls):
                return False
        else:
            return False
    return True


def _passes(user: fx.Node, node: fx.Node) -> bool:
    """A channel-wise function or method applied to ``node`` (relu, sigmoid, dropout, pooling ...)."""
    if not user.args or user.args[0] is not node:
        return False
    return (user.op == "call_function" and user.target in _PASS_FUNCTIONS) or (
        user.op == "call_method" and user.target in _PASS_METHODS
    )


def _walk_pooled(gm: fx.GraphModule, pooled: fx.Node, group: _Group, *, calls: dict[str, int]) -> bool:
    """After a 1x1 adaptive pool: only a flatten from dim 1 keeps channels as features."""
    for user in pooled.users:
        flatten = (user.op == "call_function" and user.target is torch.flatten) or (
            user.op == "call_method" and user.target == "flatten"
        )
        start = user.args[1] if len(user.args) > 1 else user.kwargs.get("start_dim", 0)
        if not flatten or start != 1:
            return False
        if not _walk(gm, user, group, spatial=False, calls=calls):
            return False
    return True


def _is_global_mean(user: fx.Node, node: fx.Node) -> bool:
    """``x.mean(dim=(2, 3))`` / ``torch.mean(x, (-2, -1))`` without keepdim: (B, C, H, W) -> (B, C)."""
    is_mean = (user.op == "call_method" and user.target == "mean") or (
        user.op == "call_function" and user.target is torch.mean
    )
    if not is_mean or user.args[0] is not node or user.kwargs.get("keepdim", False):
        return False
    dims = user.args[1] if len(user.args) > 1 else user.kwargs.get("dim")
    return isinstance(dims, tuple | list) and {d % 4 for d in dims} == {2, 3}


def _keep(group: _Group, amount: float) -> torch.Tensor:
    """Indices of the channels to keep: largest L1 filter norm x |BatchNorm scale|."""
    weight = _weight(group.producer).detach()
    score = weight.abs().flatten(1).sum(1)
    norms = [m for m in group.slices if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d)]
    gamma = norms[0].weight if norms else None
    var = norms[0].running_var if norms else None
    if norms and isinstance(gamma, torch.Tensor) and isinstance(var, torch.Tensor):
        score = score * (gamma.detach().abs() / torch.sqrt(var + norms[0].eps))
    n = weight.shape[0]
    k = max(1, round(n * (1 - amount)))
    return torch.topk(score, k).indices.sort().values


def _param(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().clone().contiguous())


def _slice_out(module: nn.Module, keep: torch.Tensor) -> None:
    assert isinstance(module, nn.Conv2d | nn.Linear)
    module.weight = _param(module.weight[keep])
    if module.bias is not None:
        module.bias = _param(module.bias[keep])
    if isinstance(module, nn.Conv2d):
        module.out_channels = len(keep)
    else:
        module.out_features = len(keep)


def _slice_in(module: nn.Module, keep: torch.Tensor) -> None:
    assert isinstance(module, nn.Conv2d | nn.Linear)
    module.weight = _param(module.weight[:, keep])
    if isinstance(module, nn.Conv2d):
        module.in_channels = len(keep)
    else:
        module.in_features = len(keep)


def _slice_all(module: nn.Module, keep: torch.Tensor) -> None:
    if isinstance(module, nn.Conv2d):  # depthwise
        module.weight = _param(module.weight[keep])
        if module.bias is not None:
            module.bias = _param(module.bias[keep])
        module.in_channels = module.out_channels = module.groups = len(keep)
        return
    assert isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d)
    if module.weight is not None:
        module.weight = _param(module.weight[keep])
        module.bias = _param(module.bias[keep])
    for name in ("running_mean", "running_var"):
        buffer = getattr(module, name)
        if buffer is not None:
            setattr(module, name, buffer[keep].clone())
    module.num_features = len(keep)


def parameter_count(model: nn.Module) -> int:
    """Number of parameters (what channel pruning shrinks)."""
    return sum(p.numel() for p in model.parameters())


__all__ = ["PRUNABLE", "channels", "magnitude", "parameter_count", "sparsity"]
