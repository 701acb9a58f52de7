"""ONNX Runtime plumbing shared by quantize and placement: export, sessions, a module-like runner.

``onnx``, ``onnxscript`` and ``onnxruntime`` are optional (``pip install 'ember[export]'``) and are
imported inside the functions here, never at import time.

The export itself is :func:`ember.deploy.export.export_onnx` (dynamic batch axis, checked against
the eager model in ONNX Runtime to ``atol`` 1e-4 before the file is kept).

Example:
    >>> import torch, tempfile
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 4)).eval()
    >>> runner = onnx_module(model, torch.randn(2, 8), tempfile.mkdtemp())  # doctest: +SKIP
    >>> runner(torch.randn(3, 8)).shape  # doctest: +SKIP
    torch.Size([3, 4])
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ember._io import atomic_path, require

INPUT, OUTPUT = "input", "output"
# Execution providers that compute on this machine; Azure's forwards requests to a remote endpoint.
REMOTE_PROVIDERS = ("AzureExecutionProvider",)


def available() -> bool:
    """Whether onnx, onnxscript and ONNX Runtime can all be imported."""
    try:
        for name in ("onnx", "onnxscript", "onnxruntime"):
            importlib.import_module(name)
    except ImportError:
        return False
    return True


def providers() -> list[str]:
    """ONNX Runtime execution providers available here that compute locally."""
    ort = require("onnxruntime", "export")
    return [p for p in ort.get_available_providers() if p not in REMOTE_PROVIDERS]


def export(model: nn.Module, example: torch.Tensor, path: str | Path, *, atol: float = 1e-4) -> float:
    """Export ``model`` to ONNX with a dynamic batch axis, verified against eager; returns the max abs error.

    Tries opset 23 first, where attention becomes one ONNX ``Attention`` node, then replaces each
    self-attention block with ONNX Runtime's fused ``com.microsoft.Attention`` (:func:`fuse_attention`;
    where a block does not match, a padding mask broadcast over queries is expanded to the full
    ``(B, 1, T, S)`` shape ONNX Runtime requires). When that fails for any reason, falls back to
    :func:`ember.deploy.export.export_onnx` with the exporter's default opset. Either way the file
    is kept only if it matches eager within ``atol`` on batches of 1, N and N + 3 rows.
    """
    path = Path(path)
    try:
        return _export_fused(model, example, path, atol=atol)
    except Exception:  # any failure of the fast path falls back to the plain export
        from ember.deploy.export import export_onnx

        return float(
            export_onnx(model, example, path, atol=atol, input_name=INPUT, output_name=OUTPUT).max_abs_error
        )


def _export_fused(model: nn.Module, example: torch.Tensor, path: Path, *, atol: float) -> float:
    onnx = require("onnx", "export")
    require("onnxscript", "export")
    x = example if len(example) > 1 else example.repeat(2, *([1] * (example.dim() - 1)))
    was_training = model.training
    model.eval()
    try:
        with quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(
                model,
                (x,),
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1 << 20)},),
                opset_version=23,
                dynamo=True,
                verbose=False,
            )
        if program is None:
            raise RuntimeError("torch.onnx.export returned no program")
        proto = program.model_proto
        fuse_attention(proto)
        _expand_attention_masks(proto)  # the blocks left unfused
        with atomic_path(path) as tmp:
            onnx.save_model(proto, str(tmp))
            error = _max_error(model, OnnxModule(tmp), x)
            if not error <= atol:
                raise ValueError(f"opset-23 export differs from eager by {error:.3g} > {atol:g}")
        return error
    finally:
        model.train(was_training)


def fuse_attention(proto: Any) -> int:
    """Replace each self-attention block with ONNX Runtime's fused ``com.microsoft.Attention``; returns how many.

    The exporter writes ``MatMul(x, W_qkv) → Add(b) → Split → 3 × (Reshape → Transpose) →
    Attention → Transpose → Reshape``. ONNX Runtime's contrib ``Attention`` takes ``x``, ``W_qkv``
    (the same ``[q | k | v]`` column layout) and ``b`` and returns ``(B, T, C)`` at once: four
    transposes, three reshapes and a split less per layer, and ``quantize_dynamic`` turns it into
    ``QAttention`` (the QKV projection in int8). A key padding mask ``(B, 1, 1, S)`` unsqueezed from
    a ``(B, S)`` boolean becomes the ``(B, S)`` int32 ``mask_index``. Blocks that differ in any way
    (causal, a scale, a softcap, a mask of another shape) are left as they are.
    """
    from onnx import TensorProto, helper, numpy_helper

    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def const(name: str) -> Any:
        if name in inits:
            return numpy_helper.to_array(inits[name])
        node = producer.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute:
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def perm(node: Any) -> list[int]:
        return [int(p) for a in node.attribute if a.name == "perm" for p in a.ints]

    def sole(name: str, op: str) -> Any:
        users = consumers.get(name, [])
        return users[0] if len(users) == 1 and users[0].op_type == op else None

    replaced: dict[int, Any] = {}
    casts: dict[str, Any] = {}
    for att in g.node:
        if att.op_type != "Attention" or att.domain not in ("", "ai.onnx") or len(att.output) != 1:
            continue
        if any(
            a.name in ("scale", "softcap", "is_causal") and helper.get_attribute_value(a)
            for a in att.attribute
        ):
            continue
        split, heads = None, set()
        for index, name in enumerate(att.input[:3]):
            t = producer.get(name)
            r = producer.get(t.input[0]) if t is not None and t.op_type == "Transpose" else None
            if r is None or r.op_type != "Reshape" or perm(t) != [0, 2, 1, 3]:
                break
            s, shape = producer.get(r.input[0]), const(r.input[1])
            if s is None or s.op_type != "Split" or shape is None or len(shape) != 4:
                break
            if (split is not None and s is not split) or list(s.output).index(r.input[0]) != index:
                break
            split = s
            heads.add(int(shape[2]))
        else:
            add = producer.get(split.input[0]) if split is not None and len(split.output) == 3 else None
            mm = producer.get(add.input[0]) if add is not None and add.op_type == "Add" else None
            out_t = sole(att.output[0], "Transpose")
            out_r = (
                sole(out_t.output[0], "Reshape")
                if out_t is not None and perm(out_t) == [0, 2, 1, 3]
                else None
            )
            if (
                len(heads) != 1
                or add is None
                or mm is None
                or mm.op_type != "MatMul"
                or mm.input[1] not in inits
                or add.input[1] not in inits
                or out_r is None
            ):
                continue
            mask = ""
            if len(att.input) > 3 and att.input[3]:
                m = producer.get(att.input[3])
                if m is not None and m.op_type == "Expand":
                    m = producer.get(m.input[0])
                axes = (
                    const(m.input[1])
                    if m is not None and m.op_type == "Unsqueeze" and len(m.input) > 1
                    else None
                )
                if m is None or axes is None or sorted(int(a) for a in axes) != [1, 2]:
                    continue
                source = m.input[0]
                mask = f"{source}_int32"
                casts.setdefault(source, helper.make_node("Cast", [source], [mask], to=TensorProto.INT32))
            replaced[id(out_r)] = helper.make_node(
                "Attention",
                [mm.input[0], mm.input[1], add.input[1], mask],
                [out_r.output[0]],
                name=f"{att.name or att.output[0]}_fused",
                domain="com.microsoft",
                num_heads=heads.pop(),
            )
    if not replaced:
        return 0
    nodes = [n for n in casts.values() if n.input[0] not in producer]  # masks that are graph inputs
    for n in g.node:
        nodes.append(replaced.get(id(n), n))
        nodes += [casts[o] for o in n.output if o in casts]
    needed = {o.name for o in g.output}
    kept = []
    for n in reversed(nodes):  # drop what only fed the replaced blocks
        if any(o in needed for o in n.output):
            kept.append(n)
            needed.update(i for i in n.input if i)
    kept.reverse()
    del g.node[:]
    g.node.extend(kept)
    weights = [i for i in g.initializer if i.name in needed]
    del g.initializer[:]
    g.initializer.extend(weights)
    if not any(o.domain == "com.microsoft" for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return len(replaced)


def _expand_attention_masks(proto: Any) -> None:
    """Give every ``Attention`` node's ``attn_mask`` the query length ONNX Runtime requires.

    ``F.scaled_dot_product_attention`` broadcasts a key padding mask ``(B, 1, 1, S)`` over the
    queries; ONNX Runtime's Attention kernel insists on ``(B, 1, T, S)``, so an ``Expand`` to
    ``[1, 1, T, 1]`` (T read from Q's shape) is inserted before it. Same values, no other change.
    """
    from onnx import TensorProto, helper

    nodes = []
    for node in proto.graph.node:
        if (
            node.op_type == "Attention"
            and node.domain in ("", "ai.onnx")
            and len(node.input) > 3
            and node.input[3]
        ):
            p = f"{node.name or node.output[0]}_mask"
            one = helper.make_tensor(f"{p}_one_value", TensorProto.INT64, [1], [1])
            nodes += [
                helper.make_node("Shape", [node.input[0]], [f"{p}_t"], start=-2, end=-1),
                helper.make_node("Constant", [], [f"{p}_one"], value=one),
                helper.make_node(
                    "Concat", [f"{p}_one", f"{p}_one", f"{p}_t", f"{p}_one"], [f"{p}_shape"], axis=0
                ),
                helper.make_node("Expand", [node.input[3], f"{p}_shape"], [f"{p}_full"]),
            ]
            node.input[3] = f"{p}_full"
        nodes.append(node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)


def _max_error(model: nn.Module, runner: nn.Module, x: torch.Tensor) -> float:
    """Largest |runner - model| over batches of 1, N and N + 3 rows (the batch axis is dynamic)."""
    more = torch.cat([x, x[:3]]) if len(x) >= 3 else x.repeat(3, *([1] * (x.dim() - 1)))
    worst = 0.0
    with torch.no_grad():
        for batch in (x[:1], x, more):
            want, got = model(batch).float(), runner(batch).float()
            if want.shape != got.shape:
                raise ValueError(f"ONNX output shape {tuple(got.shape)} != eager {tuple(want.shape)}")
            worst = max(worst, float((want - got).abs().max()))
    return worst


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Silence the exporter's internals: torch deprecations a user cannot act on, per-op log lines."""
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


@contextlib.contextmanager
def quiet_quantizer() -> Iterator[None]:
    """ONNX Runtime's quantizer logs advice ("run pre-processing") through the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def session(path: str | Path | bytes, *, threads: int = 0, provider: str = "CPUExecutionProvider") -> Any:
    """An ``InferenceSession`` on ``path`` (or a graph's bytes) with ``threads`` intra-op threads (0: ORT's default)."""
    ort = require("onnxruntime", "export")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: no hardware-specific-optimization notices
    source = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(source, options, providers=[provider])


class OnnxModule(nn.Module):
    """An ONNX file run by ONNX Runtime, behaving like the module it came from.

    ``module(*xs)`` takes and returns torch tensors (CPU; one input per graph input, a tuple out
    when the graph has several outputs); it has no parameters and cannot be trained.
    ``onnx_path``, ``onnx_bytes``, ``threads`` and ``provider`` say what runs.

    Args:
        path: the ``.onnx`` file, or a graph's bytes (a bundle's ``model.onnx``).
        threads: ONNX Runtime intra-op threads (0: its default, all cores).
        provider: the execution provider.
    """

    def __init__(
        self, path: str | Path | bytes, *, threads: int = 0, provider: str = "CPUExecutionProvider"
    ) -> None:
        super().__init__()
        self.graph = path if isinstance(path, bytes) else None
        self.onnx_path = Path(path) if not isinstance(path, bytes) else Path("model.onnx")
        self.onnx_bytes = len(path) if isinstance(path, bytes) else self.onnx_path.stat().st_size
        self.threads = threads
        self.provider = provider
        self.session = session(path, threads=threads, provider=provider)
        self._inputs = [i.name for i in self.session.get_inputs()]
        self._input = self._inputs[0]
        self._several = len(self.session.get_outputs()) > 1

    def forward(self, *xs: torch.Tensor) -> Any:
        # (B, ...) -> (B, K): numpy views both ways, no copies beyond making x contiguous
        if len(xs) == 1:
            feed = {self._input: xs[0].detach().cpu().contiguous().numpy()}
        else:
            feed = {
                name: x.detach().cpu().contiguous().numpy() for name, x in zip(self._inputs, xs, strict=True)
            }
        out = self.session.run(None, feed)
        return tuple(torch.from_numpy(o) for o in out) if self._several else torch.from_numpy(out[0])

    def with_threads(self, threads: int) -> OnnxModule:
        """The same graph in a new session with ``threads`` intra-op threads."""
        source = self.graph if self.graph is not None else self.onnx_path
        return OnnxModule(source, threads=threads, provider=self.provider)

    def extra_repr(self) -> str:
        return f"{self.onnx_path.name}, threads={self.threads}, provider={self.provider}"


def onnx_module(
    model: nn.Module, example: torch.Tensor, workdir: str | Path, *, threads: int = 0, name: str = "model"
) -> OnnxModule:
    """Export ``model`` to ``workdir/NAME.onnx`` (verified to 1e-4) and open it in ONNX Runtime."""
    path = Path(workdir) / f"{name}.onnx"
    export(model, example, path)
    return OnnxModule(path, threads=threads)


def quantize_dynamic_file(src: str | Path, dst: str | Path) -> Path:
    """ONNX Runtime dynamic int8: int8 weights of MatMul/Gemm, activations quantized per call.

    Weights signed int8 per output channel, activations unsigned (the u8 x s8 kernels VNNI runs).
    MatMul, Gemm and fused ``com.microsoft.Attention`` (:func:`fuse_attention`, whose QKV projection
    becomes ``QAttention``) are quantized; the attention scores and convolutions stay float.
    ONNX Runtime then fuses each quantized MatMul with its bias into ``DynamicQuantizeMatMul``.
    The standard (opset 23) ``Attention`` that :func:`fuse_attention` leaves alone (causal, scaled)
    shares the contrib op's name but not its inputs, so it is kept float: the quantizer would turn
    it into a ``QAttention`` ONNX Runtime refuses to load.
    """
    quantization = require("onnxruntime.quantization", "export")
    onnx = require("onnx", "export")
    graph = onnx.load(str(src), load_external_data=False).graph
    standard = [n.name for n in graph.node if n.op_type == "Attention" and n.domain in ("", "ai.onnx")]
    with quiet_quantizer():
        quantization.quantize_dynamic(
            str(src),
            str(dst),
            weight_type=quantization.QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul", "Gemm", "Attention"],
            nodes_to_exclude=standard,
        )
    return Path(dst)


class _Reader:
    """Feeds calibration batches to ONNX Runtime's static quantizer."""

    def __init__(self, name: str, batches: Iterable[torch.Tensor]) -> None:
        self.name = name
        self.batches = iter(batches)

    def get_next(self) -> dict[str, Any] | None:
        batch = next(self.batches, None)
        return None if batch is None else {self.name: batch.detach().cpu().contiguous().numpy()}


def quantize_static_file(
    src: str | Path, dst: str | Path, batches: Iterable[torch.Tensor], *, per_channel: bool = True
) -> Path:
    """ONNX Runtime static int8 (QDQ): activation ranges calibrated (min/max) on ``batches``.

    Conv, MatMul and Gemm run in int8 with u8 activations and s8 weights (per output channel when
    ``per_channel``); the graph is pre-processed (shape inference, fusions) first, as ONNX Runtime
    recommends.
    """
    quantization = require("onnxruntime.quantization", "export")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src), Path(dst)
    prepared = dst.with_name(dst.stem + ".pre.onnx")
    with quiet_quantizer():
        try:
            quant_pre_process(str(src), str(prepared), skip_symbolic_shape=False)
        except Exception:  # symbolic shape inference fails on some graphs (opset 23 Attention)
            try:
                quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
            except Exception:  # then quantize the graph as exported
                prepared.write_bytes(src.read_bytes())
        reader = _Reader(INPUT, batches)
        quantization.quantize_static(
            str(prepared),
            str(dst),
            reader,
            quant_format=quantization.QuantFormat.QDQ,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            per_channel=per_channel,
            calibrate_method=quantization.CalibrationMethod.MinMax,
        )
    prepared.unlink(missing_ok=True)
    return dst


__all__ = [
    "OnnxModule",
    "available",
    "export",
    "onnx_module",
    "providers",
    "quantize_dynamic_file",
    "quantize_static_file",
    "require",
    "session",
]
