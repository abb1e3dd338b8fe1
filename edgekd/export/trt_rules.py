"""A checker of TensorRT's explicit-quantization rules for the TensorRT-flavour INT8 ONNX.

Rules (REFERENCES.md, "Quantization for TensorRT"; NVIDIA's explicit-quantization guide):

1. opset >= 13 (per-channel DequantizeLinear);
2. every QuantizeLinear/DequantizeLinear has a constant scale and a constant zero point (initializers,
   not computed at run time), the zero point is 0 and of type int8;
3. a quantized Conv/Gemm/MatMul reads its activation through a DequantizeLinear with one (per-tensor)
   scale, and its weight through a DequantizeLinear of a constant int8 initializer within
   [-127, 127] with per-channel scales on axis 0 (one per output channel);
4. no Q/DQ on a bias (the bias input is a plain float initializer);
5. no graph output is produced by a Q or DQ node;
6. a Concat with one quantized input has all its inputs quantized with one scale, so TensorRT can
   move the Q/DQ across it and run it in INT8 (the CSP blocks and the PAN neck of a detector;
   TensorRT's Q/DQ placement recommendations);
7. an Add with one quantized input has all its (non-constant) inputs quantized, so TensorRT can fuse
   the residual Add into the Conv before it;
8. no Q/DQ after the last weighted layer: a tensor that no Conv/Gemm/MatMul reads downstream (a
   detector's decode and NMS, or a classifier's output) stays in floating point.

A Conv/Gemm/MatMul with a float weight is a layer kept out of INT8 (mixed precision; FP16 on
TensorRT) and is reported in ``float_layers``, not as a violation.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from edgekd.errors import EdgekdError

WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")


def check_trt_rules(model: onnx.ModelProto | str | os.PathLike) -> dict[str, Any]:
    """Return ``{"passed", "violations": [...], "quantized_layers", "float_layers": [...]}``."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producers = {out: n for n in graph.node for out in n.output}
    violations: list[str] = []
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < 13:
        violations.append(f"opset {opset} < 13")
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if len(node.input) < 3 or node.input[2] not in inits:
            violations.append(f"{node.name}: zero point missing or not constant (TensorRT needs int8 zero point 0)")
        else:
            zp = inits[node.input[2]]
            if zp.data_type != TensorProto.INT8:
                violations.append(
                    f"{node.name}: zero point of type {TensorProto.DataType.Name(zp.data_type)}, not INT8"
                )
            if np.any(numpy_helper.to_array(zp) != 0):
                violations.append(f"{node.name}: zero point is not 0")
        if node.input[1] not in inits:
            violations.append(f"{node.name}: scale is computed at run time, not a constant initializer")
    outputs = {o.name for o in graph.output}
    for name in outputs:
        p = producers.get(name)
        if p is not None and p.op_type in ("QuantizeLinear", "DequantizeLinear"):
            violations.append(f"graph output {name} is produced by {p.op_type}")
    violations += _placement_violations(graph, inits, producers)
    quantized, floats = 0, []
    for node in graph.node:
        if node.op_type not in WEIGHTED_OPS or len(node.input) < 2:
            continue
        wdq = producers.get(node.input[1])
        if wdq is None or wdq.op_type != "DequantizeLinear":
            floats.append(node.name)
            continue
        quantized += 1
        act = producers.get(node.input[0])
        if act is None or act.op_type != "DequantizeLinear":
            violations.append(f"{node.name}: quantized weight but its activation input has no DequantizeLinear")
        elif act.input[1] in inits and numpy_helper.to_array(inits[act.input[1]]).size != 1:
            violations.append(f"{node.name}: activation scale is not per tensor")
        w = inits.get(wdq.input[0])
        if w is None:
            violations.append(f"{node.name}: weight DequantizeLinear does not read a constant initializer")
        else:
            arr = numpy_helper.to_array(w)
            if w.data_type != TensorProto.INT8:
                violations.append(f"{node.name}: weight of type {TensorProto.DataType.Name(w.data_type)}, not INT8")
            elif arr.size and (arr.min() < -127 or arr.max() > 127):
                violations.append(f"{node.name}: int8 weight outside [-127, 127]")
            axis = next((a.i for a in wdq.attribute if a.name == "axis"), 1)
            scale = inits.get(wdq.input[1])
            n_scale = numpy_helper.to_array(scale).size if scale is not None else 0
            if n_scale != arr.shape[0] or (n_scale > 1 and axis != 0):
                violations.append(f"{node.name}: weight scales are not per output channel on axis 0")
        if len(node.input) > 2 and node.input[2]:
            b = producers.get(node.input[2])
            if b is not None and b.op_type in ("QuantizeLinear", "DequantizeLinear"):
                violations.append(f"{node.name}: Q/DQ on the bias")
    return {
        "passed": not violations,
        "violations": violations,
        "opset": opset,
        "quantized_layers": quantized,
        "float_layers": floats,
    }


def _dq_scale(node: onnx.NodeProto | None, inits: dict[str, onnx.TensorProto]) -> float | None:
    """The per-tensor scale of a DequantizeLinear, None when ``node`` is not one (or not per tensor)."""
    if node is None or node.op_type != "DequantizeLinear" or node.input[1] not in inits:
        return None
    scale = numpy_helper.to_array(inits[node.input[1]])
    return float(scale.reshape(-1)[0]) if scale.size == 1 else None


def _placement_violations(
    graph: onnx.GraphProto, inits: dict[str, onnx.TensorProto], producers: dict[str, onnx.NodeProto]
) -> list[str]:
    """Rules 6-8 of the module docstring."""
    violations: list[str] = []
    for node in graph.node:
        if node.op_type not in ("Concat", "Add"):
            continue
        inputs = [i for i in node.input if i and i not in inits]
        dqs = [producers.get(i) for i in inputs]
        quantized = [d is not None and d.op_type == "DequantizeLinear" for d in dqs]
        if not any(quantized):
            continue
        if not all(quantized):
            violations.append(f"{node.op_type} {node.name}: some inputs are quantized and some are not")
        elif node.op_type == "Concat":
            scales = {_dq_scale(d, inits) for d in dqs}
            if len(scales) > 1 or None in scales:
                violations.append(f"Concat {node.name}: its inputs are quantized with different scales")
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    feeds_layer: set[str] = set()  # first outputs of the nodes with a Conv/Gemm/MatMul downstream
    stack = [n for n in graph.node if n.op_type in WEIGHTED_OPS]
    while stack:
        node = stack.pop()
        for name in node.input:
            p = producers.get(name)
            if p is not None and p.output[0] not in feeds_layer:
                feeds_layer.add(p.output[0])
                stack.append(p)
    for node in graph.node:
        if node.op_type == "QuantizeLinear" and node.output[0] not in feeds_layer:
            violations.append(
                f"{node.name}: Q/DQ on {node.input[0]}, which no Conv/Gemm/MatMul reads downstream "
                "(keep decode, NMS and outputs in floating point)"
            )
    return violations


def assert_trt_rules(model: onnx.ModelProto | str | os.PathLike) -> dict[str, Any]:
    """:func:`check_trt_rules`, raising a one-line ``EdgekdError`` on the first violation."""
    result = check_trt_rules(model)
    if not result["passed"]:
        more = len(result["violations"]) - 1
        raise EdgekdError(
            f"the TensorRT INT8 ONNX breaks TensorRT's explicit-quantization rules: {result['violations'][0]}"
            + (f" (and {more} more)" if more else "")
            + "; this is a bug in the export, please report it"
        )
    return result
