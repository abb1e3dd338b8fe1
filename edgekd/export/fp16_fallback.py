"""FP16 fallback written into the ONNX: the layers the quantize stage kept out of INT8 run in FP16.

TensorRT 11 builds every network strongly typed and has no precision flags (no ``--fp16``, no
``BuilderFlag.FP16``), and TensorRT 10 recommends strong typing for Q/DQ networks: a strongly typed
network runs each layer in the type its ONNX gives it. So the FP16 fallback of sensitive layers
(``qm.skipped``, left in float by the mixed-precision search) has to live in the model, not in
builder flags. :func:`cast_float_layers_to_fp16` rewrites each Conv/Gemm/MatMul whose weight is a
float initializer (not behind a DequantizeLinear) as

    x (float32) -> Cast(to FLOAT16) -> layer with FP16 weight and bias -> Cast(to FLOAT) -> y (float32)

Only the weighted layer itself changes type; the float glue around it (ReLU, Add, pooling) stays
FP32, and the tensors between layers keep their names and float32 types, so the Q/DQ pairs and the
graph outputs are untouched. ONNX Runtime runs the same FP16 layers on the CPU, so the export
stage's parity check measures what FP16 does to the model's answers. Weights are converted with
``numpy.float16`` (round to nearest even, as TensorRT converts FP32 weights).

Written with ``onnx.helper`` like the rest of the export (edgekd/export/int8_onnx.py): the edit is
one pass over the node list, and onnx-graphsurgeon would add a dependency for it without removing
any code.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgekd.runtimes.onnx_graph import replace_nodes

WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")


def _fp16_initializer(graph: onnx.GraphProto, inits: dict[str, onnx.TensorProto], name: str) -> str:
    """The name of an FP16 copy of the float32 initializer ``name`` (made once)."""
    new = name + "_fp16"
    if new not in inits:
        array = numpy_helper.to_array(inits[name]).astype(np.float16)
        tensor = numpy_helper.from_array(array, new)
        graph.initializer.append(tensor)
        inits[new] = tensor
    return new


def _is_float_layer(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> bool:
    return (
        node.op_type in WEIGHTED_OPS
        and len(node.input) > 1
        and node.input[1] in inits
        and inits[node.input[1]].data_type == TensorProto.FLOAT
    )


def float_layers(model: onnx.ModelProto) -> list[str]:
    """Names of the Conv/Gemm/MatMul nodes whose weight is a float32 initializer (not quantized)."""
    inits = {i.name: i for i in model.graph.initializer}
    return [node.name for node in model.graph.node if _is_float_layer(node, inits)]


def cast_float_layers_to_fp16(model: onnx.ModelProto) -> list[str]:
    """Rewrite every float weighted layer of ``model`` (in place) to run in FP16; returns their names."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    casts_in: dict[str, str] = {}
    nodes: list[onnx.NodeProto] = []
    done: list[str] = []
    for node in graph.node:
        if not _is_float_layer(node, inits):
            nodes.append(node)
            continue
        done.append(node.name)
        x = node.input[0]
        if x not in casts_in:
            casts_in[x] = x + "_fp16"
            nodes.append(helper.make_node("Cast", [x], [casts_in[x]], name=f"{x}_CastFP16", to=TensorProto.FLOAT16))
        node.input[0] = casts_in[x]
        for i in range(1, len(node.input)):
            if node.input[i] in inits and inits[node.input[i]].data_type == TensorProto.FLOAT:
                node.input[i] = _fp16_initializer(graph, inits, node.input[i])
        y = node.output[0]
        node.output[0] = y + "_fp16"
        nodes.append(node)
        back = helper.make_node("Cast", [node.output[0]], [y], name=f"{node.name}_CastFP32", to=TensorProto.FLOAT)
        nodes.append(back)
    if not done:
        return []
    replace_nodes(graph, nodes)
    return done
