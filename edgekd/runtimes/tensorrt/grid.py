"""TensorRT timing of the one-layer models of ``edgekd profile``'s grid (edgekd/targets/calibrate.py).

Each grid model carries its precision in its types (FP16 tensors, or Q/DQ for INT8), so it builds
strongly typed on TensorRT 10.x and 11.x alike (11.x has no precision flags and no
``set_dynamic_range``); weakly typed builds on 8.x get the flags instead (``build.build_plan``).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgekd.errors import EdgekdError
from edgekd.runtimes.onnx_graph import replace_nodes


def typed_point_model(model: onnx.ModelProto, precision: str) -> onnx.ModelProto:
    """A one-layer grid model with its precision in its types, for strongly typed TensorRT builds
    (TensorRT 11 has no precision flags and no ``set_dynamic_range``; 10.x deprecates both).

    fp32: unchanged. fp16: every float tensor (inputs, weights, output) in FLOAT16. int8: explicit
    quantization as in the INT8 export: a QuantizeLinear/DequantizeLinear pair (int8, zero point 0)
    on every activation input of every node, and Conv/Gemm weights as int8 initializers behind a
    per-channel DequantizeLinear (axis 0). Scales are placeholders (1/32): the speed is what is timed.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    if precision == "fp32":
        return out
    if precision == "fp16":
        for init in graph.initializer:
            if init.data_type == TensorProto.FLOAT:
                init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
        for value in list(graph.input) + list(graph.output):
            if value.type.tensor_type.elem_type == TensorProto.FLOAT:
                value.type.tensor_type.elem_type = TensorProto.FLOAT16
        return out
    if precision != "int8":
        raise EdgekdError(f"unknown precision {precision!r}; use fp32, fp16 or int8")
    inits = {i.name: i for i in graph.initializer}
    scale, zero = np.array(1 / 32, np.float32), np.array(0, np.int8)
    graph.initializer.extend([numpy_helper.from_array(scale, "qs"), numpy_helper.from_array(zero, "qz")])
    nodes: list[onnx.NodeProto] = []
    dq_of: dict[str, str] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in inits:
                if i == 1 and node.op_type in ("Conv", "Gemm"):
                    w = numpy_helper.to_array(inits[name])
                    graph.initializer.extend(
                        [
                            numpy_helper.from_array(np.clip(np.round(w * 32), -127, 127).astype(np.int8), name + "_q"),
                            numpy_helper.from_array(np.full(w.shape[0], 1 / 32, np.float32), name + "_s"),
                            numpy_helper.from_array(np.zeros(w.shape[0], np.int8), name + "_z"),
                        ]
                    )
                    nodes.append(
                        helper.make_node(
                            "DequantizeLinear", [name + "_q", name + "_s", name + "_z"], [name + "_dq"], axis=0
                        )
                    )
                    node.input[i] = name + "_dq"
                continue
            if name not in dq_of:
                dq_of[name] = name + "_dq"
                nodes.append(helper.make_node("QuantizeLinear", [name, "qs", "qz"], [name + "_q"]))
                nodes.append(helper.make_node("DequantizeLinear", [name + "_q", "qs", "qz"], [dq_of[name]]))
            node.input[i] = dq_of[name]
        nodes.append(node)
    replace_nodes(graph, nodes)
    return out


def grid_build_plan(major: int, precision: str):
    """Grid models carry their precision in their types (:func:`typed_point_model`), so TensorRT 9 and
    later build them strongly typed with no precision flag; TensorRT 8 builds them weakly typed with
    the precision's flags (INT8 to honour the Q/DQ nodes, FP16 to allow FP16 kernels)."""
    from edgekd.runtimes.tensorrt.build import build_plan

    if major >= 9:
        return build_plan(major, int8=True, fp16=True)
    return build_plan(major, int8=precision == "int8", fp16=precision != "fp32")


def build_grid_engine(trt, logger, path: Path, precision: str) -> bytes:
    """Build the serialized engine of one grid model at ``precision`` with the TensorRT module ``trt``
    (the same flags rules as the export: edgekd/runtimes/tensorrt/build.py)."""
    from edgekd.runtimes.tensorrt.build import _major, network_flags, set_precision_flags

    plan = grid_build_plan(_major(trt.__version__) or 0, precision)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, plan.strongly_typed))
    parser = trt.OnnxParser(network, logger)
    model = typed_point_model(onnx.load(str(path)), precision)
    if not parser.parse(model.SerializeToString()):
        raise EdgekdError(f"TensorRT cannot parse {path.name}: {parser.get_error(0)}")
    config = builder.create_builder_config()
    set_precision_flags(trt, builder, config, plan)
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise EdgekdError(f"TensorRT could not build an engine for {path.name}; check the TensorRT install")
    return bytes(blob)


def tensorrt_timer(
    precision: str,
) -> Callable[[Path, list[np.ndarray], int, int], float]:  # pragma: no cover - needs an NVIDIA GPU and TensorRT
    """Build a TensorRT engine for each one-layer model and time it with CUDA events."""
    import tensorrt as trt
    import torch

    logger = trt.Logger(trt.Logger.ERROR)

    def time_model(path: Path, inputs: list[np.ndarray], sessions: int, min_runs: int) -> float:
        blob = build_grid_engine(trt, logger, path, precision)
        engine = trt.Runtime(logger).deserialize_cuda_engine(blob)
        context = engine.create_execution_context()
        buffers = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            shape = tuple(context.get_tensor_shape(name))
            buf = torch.zeros(shape, dtype=torch.float32, device="cuda")  # float32: room for any type here
            buffers.append(buf)
            context.set_tensor_address(name, buf.data_ptr())
        stream = torch.cuda.Stream()
        medians = []
        for _ in range(sessions):
            for _ in range(3):
                context.execute_async_v3(stream.cuda_stream)
            times = []
            for _ in range(max(min_runs, 20)):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record(stream)
                context.execute_async_v3(stream.cuda_stream)
                end.record(stream)
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            medians.append(float(np.percentile(times, 10)))
        return statistics.fmean(medians)

    return time_model
