"""Fusion rules: which ONNX nodes one runtime kernel runs, so each kernel is priced once.

The latency model prices *layers* (one kernel each, :class:`Layer`). Which elementwise nodes a
runtime folds into the producing kernel differs by runtime, and pricing an unfused op as free (or
a fused one twice) is the largest error on mobile networks:

- ``tensorrt``: pointwise fusion is general; an elementwise node joins the layer that produced its
  input whenever every consumer of that tensor is elementwise (Conv + SiLU, Conv + residual Add).
- ``onnxruntime`` (CPU, ``ORT_ENABLE_ALL``; read from ORT 1.32's optimised graphs of edet_n and
  mobilenet_v3_small): a Conv or Gemm absorbs *one* activation among Relu, Clip, Sigmoid, Tanh,
  LeakyRelu, HardSigmoid, HardSwish (FusedConv) and a residual Add or a constant bias, only when its
  output has no other consumer (the NCHWc Sum fusion); ``x * Sigmoid(x)`` (SiLU) becomes one
  QuickGelu kernel and ``x * HardSigmoid(x)`` one HardSwish, both *not* fused into the Conv;
  every other elementwise node (the squeeze-excitation gate ``Mul``, an Add after SiLU) is a
  kernel of its own.

Counts are in *elements* (activations read, activations written, weights), FLOPs count a
multiply-add as 2.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import onnx

from edgekd.targets.onnx_ops import ELEMENTWISE, FREE_OPS, POOL_OPS

# Layer kinds (the latency model and the calibration table key on them).
KINDS = ("conv", "conv1x1", "dwconv", "gconv", "gemm", "pool", "eltwise", "data", "nms")
RUNTIMES = ("tensorrt", "onnxruntime")
ORT_CONV_ACTIVATIONS = frozenset({"Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid", "HardSwish"})
_GATES = {"Sigmoid": "SiLU", "HardSigmoid": "HardSwish"}  # x * gate(x) -> one kernel of this name
_CONV_OPS = ("Conv", "ConvTranspose", "ConvInteger", "QLinearConv")
_GEMM_OPS = ("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul")


@dataclass
class Layer:
    """One fused kernel: what it computes and how many elements it moves."""

    name: str
    op: str  # the anchor node's op type (or the fused pattern: SiLU, HardSwish, MulBcast)
    kind: str  # one of KINDS
    flops: float  # multiply-add counted as 2
    act_in: float  # activation elements read
    act_out: float  # activation elements written
    weights: float  # weight elements read
    key: str  # shape signature, the calibration table's key
    fused: list[str] = field(default_factory=list)  # op types folded into this kernel

    def elements(self) -> float:
        return self.act_in + self.act_out + self.weights

    def fit_key(self) -> str:
        """The calibration table's fit for this layer: per kind for convolutions and GEMMs, per op
        for memory-bound layers (a Resize and an Add of the same size do not cost the same)."""
        return f"{self.kind}:{self.op}" if self.kind in ("pool", "eltwise", "data") else self.kind

    def to_dict(self) -> dict:
        return asdict(self)


def numel(shape: list[int | None] | None) -> float:
    if shape is None or any(d is None for d in shape):
        return 0.0
    return float(math.prod(shape)) if shape else 1.0


def attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def conv_kind(groups: int, cin: int, k: list[int]) -> str:
    if groups > 1 and groups == cin:
        return "dwconv"
    if groups > 1:
        return "gconv"
    if all(x == 1 for x in k):
        return "conv1x1"
    return "conv"


def _ort_joins(node, layer: Layer, t: str, consumers, constants, shapes) -> bool:
    """Whether ONNX Runtime runs elementwise ``node`` inside the kernel of ``layer``, which wrote ``t``."""
    single = len(consumers.get(t, [])) == 1
    if layer.op in _CONV_OPS or layer.op in _GEMM_OPS:
        if not single:
            return False
        has_act = any(op in ORT_CONV_ACTIVATIONS for op in layer.fused)
        if node.op_type in ORT_CONV_ACTIVATIONS:
            return not has_act
        if node.op_type == "Add":
            others = [i for i in node.input if i and i != t]
            constant = all(i in constants for i in others)
            same_shape = all(shapes.get(i) == shapes.get(t) for i in others)
            return constant or (same_shape and not layer.fused and layer.op in _CONV_OPS)
        return node.op_type in ("BatchNormalization", "Mul", "Div") and all(
            i in constants for i in node.input if i and i != t
        )
    return False


def group_layers(
    nodes: list[onnx.NodeProto],
    shapes: dict[str, list[int | None]],
    constants: set[str],
    data: set[str],
    runtime: str = "tensorrt",
) -> list[Layer]:
    """The fused layers of ``nodes`` under ``runtime``'s fusion rules (see the module docstring)."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for t in node.input:
            if t:
                consumers.setdefault(t, []).append(node)
    constants = set(constants)
    for node in nodes:  # outputs of Constant nodes and small shape tensors are constants too
        if node.op_type in ("Constant", "ConstantOfShape", "Shape", "Size", "Range"):
            constants.update(node.output)
    producer_layer: dict[str, int] = {}  # tensor -> index of the layer that produced it
    gate_input: dict[int, str] = {}  # layer index of a Sigmoid/HardSigmoid -> its input tensor
    layers: list[Layer] = []

    def is_activation(t: str) -> bool:
        return bool(t) and t not in constants and t in data and numel(shapes.get(t)) > 0

    for node in nodes:
        acts = [t for t in node.input if is_activation(t)]
        out_elems = sum(numel(shapes.get(t)) for t in node.output)
        nms = _nms_in_branch(node, shapes) if node.op_type == "If" else None
        if nms is not None:  # torchvision's "no boxes ? empty : NMS": the NMS branch is priced
            layers.append(nms)
            continue
        if node.op_type in FREE_OPS or not acts:
            # metadata only, or pure shape arithmetic: the output aliases the input's layer
            if acts and acts[0] in producer_layer:
                for t in node.output:
                    producer_layer[t] = producer_layer[acts[0]]
            else:
                constants.update(node.output)
            continue
        if node.op_type in ELEMENTWISE:
            idx = _join_target(node, acts, producer_layer, layers, consumers, constants, shapes, runtime, gate_input)
            if idx is not None:
                layer = layers[idx]
                inside = {t for t in acts if producer_layer.get(t) == idx}
                if layer.op in _GATES and node.op_type == "Mul" and not layer.fused:
                    layer.op = _GATES[layer.op]  # x * gate(x): x is read once, by the fused kernel
                    layer.key = f"eltwise:{layer.op}:" + layer.key.split(":", 2)[2]
                    inside |= {gate_input[idx]}
                layer.act_in += sum(numel(shapes.get(t)) for t in acts if t not in inside)
                layer.act_out = out_elems  # the fused kernel writes the last result instead
                layer.flops += out_elems
                layer.fused.append(node.op_type)
                for t in node.output:
                    producer_layer[t] = idx
                continue
        layer = anchor_layer(node, acts, shapes, constants, out_elems)
        layers.append(layer)
        if node.op_type in _GATES and acts:
            gate_input[len(layers) - 1] = acts[0]
        for t in node.output:
            producer_layer[t] = len(layers) - 1
    return layers


def _nms_in_branch(node: onnx.NodeProto, shapes: dict[str, list[int | None]]) -> Layer | None:
    """An NMS layer for an ``If`` node with a NonMaxSuppression in a branch, its candidates the boxes
    ``[N, 4]`` the branch reads from the outer graph (shapes of the reference run); else None."""
    for a in node.attribute:
        if a.type != onnx.AttributeProto.GRAPH or not any(n.op_type == "NonMaxSuppression" for n in a.g.node):
            continue
        inner = {t for n in a.g.node for t in n.output} | {i.name for i in a.g.initializer}
        outer = {t for n in a.g.node for t in n.input if t and t not in inner}
        boxes = [shapes[t][0] for t in outer if len(shapes.get(t) or []) == 2 and shapes[t][1] == 4]
        candidates = float(max((b for b in boxes if b), default=0))
        name = node.name or f"If:{node.output[0]}"
        return Layer(name, "NonMaxSuppression", "nms", 0.0, candidates, 0.0, 0.0, f"nms:{int(candidates)}")
    return None


def _join_target(node, acts, producer_layer, layers, consumers, constants, shapes, runtime, gate_input) -> int | None:
    """The index of the layer ``node`` fuses into under ``runtime``, or None (it starts its own)."""
    if runtime == "onnxruntime":
        if node.op_type == "Mul":  # x * gate(x): fuses into the gate's kernel
            for t in acts:
                idx = producer_layer.get(t)
                if idx is not None and idx in gate_input and layers[idx].op in _GATES and not layers[idx].fused:
                    if gate_input[idx] in node.input and len(consumers.get(t, [])) == 1:
                        return idx
        for t in acts:
            idx = producer_layer.get(t)
            if idx is None or layers[idx].op in _GATES:
                continue
            if _ort_joins(node, layers[idx], t, consumers, constants, shapes):
                return idx
        return None
    joinable = [t for t in acts if t in producer_layer and all(c.op_type in ELEMENTWISE for c in consumers.get(t, []))]
    return producer_layer[joinable[0]] if joinable else None


def anchor_layer(
    node: onnx.NodeProto,
    acts: list[str],
    shapes: dict[str, list[int | None]],
    constants: set[str],
    out_elems: float,
) -> Layer:
    """The layer that ``node`` starts: its kind, work and shape key."""
    op = node.op_type
    in_shape = shapes.get(acts[0]) or []
    out_shape = shapes.get(node.output[0]) or []
    act_in = sum(numel(shapes.get(t)) for t in acts)
    weights = sum(numel(shapes.get(t)) for t in node.input if t and t in constants and t in shapes)
    name = node.name or f"{op}:{node.output[0]}"
    if op in _CONV_OPS:
        w_name = node.input[3] if op == "QLinearConv" else node.input[1]
        w = shapes.get(w_name) or []
        groups = int(attr(node, "group", 1))
        k = [int(x) for x in w[2:]] if len(w) > 2 else [1]
        strides = [int(s) for s in attr(node, "strides", [1] * len(k))]
        cin = int(in_shape[1]) if len(in_shape) > 1 and in_shape[1] else 0
        cout = int(out_shape[1]) if len(out_shape) > 1 and out_shape[1] else 0
        ref = in_shape if op == "ConvTranspose" else out_shape
        macs = numel(ref) * (w[1] if len(w) > 1 else 1) * math.prod(k)
        kind = conv_kind(groups, cin, k)
        spatial = "x".join(str(d) for d in in_shape[2:])
        key = (
            f"{kind}:n{in_shape[0] if in_shape else 0}:c{cin}:hw{spatial}:o{cout}:"
            f"k{'x'.join(map(str, k))}:s{'x'.join(map(str, strides))}:g{groups}"
        )
        return Layer(name, op, kind, 2.0 * macs, act_in, out_elems, weights, key)
    if op in _GEMM_OPS:
        a = in_shape
        b = shapes.get(node.input[1]) or []
        k_dim = a[-1] if a else 0
        n_dim = b[-1] if len(b) >= 2 else 1
        if op == "Gemm" and attr(node, "transB", 0):
            n_dim = b[0] if b else 1
        if op == "Gemm" and attr(node, "transA", 0):
            k_dim = a[0] if a else 0
        macs = numel(out_shape) * (k_dim or 0)
        key = f"gemm:m{int(numel(a) // k_dim) if k_dim else 0}:k{k_dim}:n{n_dim}"
        return Layer(name, op, "gemm", 2.0 * macs, act_in, out_elems, weights, key)
    if op in POOL_OPS:
        kernel = attr(node, "kernel_shape", None)
        flops = out_elems * math.prod(kernel) if kernel else act_in
        key = f"pool:{op}:{'x'.join(str(d) for d in in_shape)}:k{'x'.join(map(str, kernel or []))}"
        return Layer(name, op, "pool", float(flops), act_in, out_elems, weights, key)
    if op == "NonMaxSuppression":  # priced by the measured NMS term (nms_cost.py): key = candidates
        scores = shapes.get(node.input[1]) or []
        candidates = numel(scores)
        return Layer(name, op, "nms", 0.0, candidates, 0.0, 0.0, f"nms:{int(candidates)}")
    if op in ELEMENTWISE or op in ("Softmax", "LogSoftmax", "LayerNormalization"):
        if op == "Mul" and len(acts) + len([i for i in node.input if i in constants]) == 2:
            sizes = {numel(shapes.get(t)) for t in node.input if t}
            op = "MulBcast" if len(sizes) > 1 and any(s > 1 for s in sizes) and len(acts) == 2 else op
        key = f"eltwise:{op}:{'x'.join(str(d) for d in out_shape)}"
        return Layer(name, op, "eltwise", out_elems * (5 if "Softmax" in op else 1), act_in, out_elems, weights, key)
    key = f"data:{op}:{'x'.join(str(d) for d in out_shape)}"
    return Layer(name, op, "data", 0.0, act_in, out_elems, weights, key)
