"""One quantized model, two INT8 ONNX flavours: TensorRT (int8 Q/DQ) and ONNX Runtime CPU (uint8).

How the files are made (all from one scale table, :meth:`QuantizedModel.scale_table`):

1. The BN-folded fake-quant model is exported with float weights: each enabled activation
   quantizer becomes a QuantizeLinear/DequantizeLinear pair (int8, zero point 0, constant scale),
   exactly where the fake-quant model quantizes (edgekd/quant/graph.py).
2. Graph surgery puts the weights in: each quantized Conv/Gemm weight becomes a constant int8
   initializer (range [-127, 127]) behind a DequantizeLinear with per-channel scales on axis 0, so no
   scale is computed at run time (the Abs/ReduceMax nodes that a plain export of weight fake-quant
   leaves in the graph: DESIGN.md). Biases stay float (already on their int32 grid, see
   ``QuantWeighted``), graph outputs get no Q/DQ. This is the
   TensorRT flavour (``model_int8.onnx``); ``trt_rules.check_trt_rules`` verifies it. Layers kept
   out of INT8 get FP16 types and Casts in this flavour (edgekd/export/fp16_fallback.py), because
   strongly typed TensorRT builds (10.x, and every build on 11.x) take each layer's precision from
   the ONNX.
3. The CPU flavour (``model_int8_cpu.onnx``) rewrites only how the same grid is stored, for ONNX
   Runtime's integer kernels (int8 activations ran slower than FP32 there: DESIGN.md):
   - an activation with scale s and zero point 0 in int8 is the same grid as uint8 with scale s and
     zero point 128 (clamp(round(x/s), -128, 127) + 128 == clamp(round(x/s) + 128, 0, 255));
   - a tensor that comes out of a ReLU is non-negative, so it is written as uint8 with zero point 0
     and the same scale s. It equals the int8 grid on [0, 127 s] (only values above the calibrated
     range differ: TensorRT clips them at 127 s, the CPU flavour at 255 s), and ONNX Runtime then
     fuses the ReLU into the quantization, as its own ``quantize_static`` output does;
   - each quantized Conv/Gemm bias becomes int32 with scale s_in * s_w (per channel) behind a
     DequantizeLinear, which ONNX Runtime needs to turn DQ -> Conv -> Q into one QLinearConv;
   - the weights stay int8 (U8S8) or become uint8 + 128 with zero point 128 (U8U8, the same grid),
     chosen by the instruction set of the CPU that runs the file: U8S8 saturates on x86 without
     VNNI (``cpu_encoding.py``).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgekd.errors import EdgekdError
from edgekd.export.fp16_fallback import cast_float_layers_to_fp16
from edgekd.io import atomic_write
from edgekd.quant.fakequant import INT32_MAX
from edgekd.quant.graph import QuantizedModel
from edgekd.runtimes.onnx_graph import prune_initializers
from edgekd.runtimes.onnxruntime.int8_encoding import apply_encoding, choose_encoding, host_isa, u8s8_pair_bound

WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.float32).tobytes()).hexdigest()


def constants_to_initializers(model: onnx.ModelProto) -> None:
    """Replace Constant nodes that hold a tensor by initializers (Q/DQ scales must be initializers)."""
    graph = model.graph
    keep = []
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


def _inits(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    return {init.name: init for init in graph.initializer}


def _dequantized_constant(graph, base: str, q: np.ndarray, scale: np.ndarray, q_suffix: str, prefix: str):
    """Store ``q`` (int8 weights or int32 biases) with its per-channel ``scale`` and zero points as
    initializers named after ``base``, and return the DequantizeLinear (axis 0) that yields ``base_dq``."""
    graph.initializer.extend(
        [
            numpy_helper.from_array(q, base + q_suffix),
            numpy_helper.from_array(scale, base + prefix + "_scale"),
            numpy_helper.from_array(np.zeros(scale.shape, q.dtype), base + prefix + "_zero_point"),
        ]
    )
    return helper.make_node(
        "DequantizeLinear",
        [base + q_suffix, base + prefix + "_scale", base + prefix + "_zero_point"],
        [base + "_dq"],
        name=base + "_DequantizeLinear",
        axis=0,
    )


def _topological_insert(graph: onnx.GraphProto, new_nodes: list[onnx.NodeProto]) -> None:
    """Put constant-fed DQ nodes first: their inputs are initializers, so the graph stays sorted."""
    old = list(graph.node)
    del graph.node[:]
    graph.node.extend(new_nodes + old)


def insert_weight_dq(model: onnx.ModelProto, qm: QuantizedModel) -> dict[str, str]:
    """Write every enabled layer's weight as int8 + per-channel DequantizeLinear (axis 0).

    Weights are matched to layers by content (the export keeps the float values bit for bit).
    Returns {ONNX node name: layer name} for the quantized nodes.
    """
    graph = model.graph
    inits = _inits(graph)
    layers = qm.layers
    by_digest = {_digest(q.layer.weight.detach().cpu().numpy()): name for name, q in layers.items()}
    table = qm.scale_table()["layers"]
    new_nodes: list[onnx.NodeProto] = []
    matched: dict[str, str] = {}
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 2 or node.input[1] not in inits:
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        layer = by_digest.get(_digest(w))
        if layer is None or not table[layer]["enabled"]:
            continue
        if node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            if not trans_b:
                raise EdgekdError(f"Gemm {node.name} has its weight transposed (transB=0); re-export with torch Linear")
        scale = np.asarray(table[layer]["weight_scale"], dtype=np.float32)
        if scale.shape[0] != w.shape[0]:
            raise EdgekdError(f"layer {layer}: {scale.shape[0]} weight scales for {w.shape[0]} output channels")
        q = np.clip(np.round(w / scale.reshape((-1,) + (1,) * (w.ndim - 1))), -127, 127).astype(np.int8)
        new_nodes.append(_dequantized_constant(graph, node.input[1], q, scale, "_int8", ""))
        node.input[1] = node.input[1] + "_dq"
        matched[node.name] = layer
    _topological_insert(graph, new_nodes)
    prune_initializers(graph)
    return matched


def _scalar(inits: dict[str, onnx.TensorProto], name: str) -> float:
    return float(numpy_helper.to_array(inits[name]).reshape(-1)[0])


def _non_negative(producer: onnx.NodeProto | None, inits: dict[str, onnx.TensorProto]) -> bool:
    """True when ``producer``'s output cannot be negative (ReLU, or Clip with a min >= 0)."""
    if producer is None:
        return False
    if producer.op_type in ("Relu", "Sigmoid"):
        return True
    if producer.op_type == "Clip" and len(producer.input) > 1 and producer.input[1] in inits:
        return _scalar(inits, producer.input[1]) >= 0
    return False


def _quantize_silu_inputs(graph: onnx.GraphProto, conv_outputs: dict[str, float]) -> None:
    """Q/DQ (int8, zero point 0; made uint8 by the caller) on the output of each Conv named in
    ``conv_outputs`` (node -> scale), which goes into a SiLU, and on that SiLU's Sigmoid (scale 1/255
    on [0, 1]), so that ONNX Runtime fuses QLinearConv, QLinearSigmoid and QLinearMul
    (edgekd/quant/graph.py, "SiLU")."""
    if not conv_outputs:
        return
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    after: dict[str, list[onnx.NodeProto]] = {}  # node output -> the Q/DQ to place right after it

    def qdq(tensor: str, scale: float, users: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
        base = f"{tensor}_cpu"
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(scale, dtype=np.float32), base + "_scale"),
                numpy_helper.from_array(np.array(0, dtype=np.int8), base + "_zero_point"),
            ]
        )
        for user in users:
            for i, name in enumerate(user.input):
                if name == tensor:
                    user.input[i] = base + "_dq"
        return [
            helper.make_node(
                "QuantizeLinear", [tensor, base + "_scale", base + "_zero_point"], [base + "_q"], name=base + "_Q"
            ),
            helper.make_node(
                "DequantizeLinear",
                [base + "_q", base + "_scale", base + "_zero_point"],
                [base + "_dq"],
                name=base + "_DQ",
            ),
        ]

    for node in graph.node:
        if node.op_type != "Conv" or node.name not in conv_outputs:
            continue
        out = node.output[0]
        users = consumers.get(out, [])
        if not users or any(u.op_type not in ("Sigmoid", "Mul") for u in users):
            continue
        after[out] = qdq(out, conv_outputs[node.name], users)
        for sig in (u for u in users if u.op_type == "Sigmoid"):
            after[sig.output[0]] = qdq(sig.output[0], 1.0 / 255.0, consumers.get(sig.output[0], []))
    ordered = []
    for node in graph.node:
        ordered.append(node)
        ordered.extend(after.get(node.output[0], []) if node.output else [])
    del graph.node[:]
    graph.node.extend(ordered)


def to_cpu_flavour(trt_model: onnx.ModelProto, conv_outputs: dict[str, float] | None = None) -> onnx.ModelProto:
    """The CPU flavour of a TensorRT-flavour model: uint8 activations, int32 biases (module docstring),
    and Q/DQ on the Conv outputs named in ``conv_outputs`` that go into a SiLU."""
    model = onnx.ModelProto()
    model.CopyFrom(trt_model)
    graph = model.graph
    _quantize_silu_inputs(graph, conv_outputs or {})
    inits = _inits(graph)
    producers = _producers(graph)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    # 1. activations: int8 zp 0 -> uint8 zp 128, or zp 0 after a ReLU
    for node in list(graph.node):
        if node.op_type != "QuantizeLinear" or node.input[0] in inits:
            continue
        zp = 0 if _non_negative(producers.get(node.input[0]), inits) else 128
        zp_name = node.output[0] + "_zero_point_u8"
        graph.initializer.append(numpy_helper.from_array(np.array(zp, dtype=np.uint8), zp_name))
        node.input[2] = zp_name
        for dq in consumers.get(node.output[0], []):
            if dq.op_type == "DequantizeLinear":
                dq.input[2] = zp_name
    # 2. biases of quantized layers: int32 with scale s_in * s_w behind a DequantizeLinear
    new_nodes = []
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or node.input[2] not in inits:
            continue
        act, wdq = producers.get(node.input[0]), producers.get(node.input[1])
        if act is None or wdq is None or act.op_type != "DequantizeLinear" or wdq.op_type != "DequantizeLinear":
            continue
        s_in = _scalar(inits, act.input[1])
        s_w = numpy_helper.to_array(inits[wdq.input[1]]).astype(np.float64).reshape(-1)
        bias = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
        s_b = (s_in * s_w) * np.ones_like(bias)
        if np.any(np.abs(bias / s_b) > INT32_MAX):  # does not fit int32: stays float, as in fake quant
            continue
        q = np.round(bias / s_b).astype(np.int32)
        new_nodes.append(_dequantized_constant(graph, node.input[2], q, s_b.astype(np.float32), "_int32", "_bias"))
        node.input[2] = node.input[2] + "_dq"
    _topological_insert(graph, new_nodes)
    prune_initializers(graph)
    return model


def _save(model: onnx.ModelProto, path: Path) -> Path:
    def write(tmp: Path) -> None:
        onnx.save(model, str(tmp))
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise EdgekdError(f"the INT8 ONNX {path.name} fails the ONNX checker: {first}") from err

    return atomic_write(path, write)


def export_int8(
    qm: QuantizedModel,
    trt_path: str | Path,
    cpu_path: str | Path | None,
    *,
    input_shape: tuple[int, int, int],
    opset: int = 17,
    fp16_fallback: bool = True,
    cpu_isa: tuple[str, str] | None = None,
    write_float: Callable[[QuantizedModel, Path], Any] | None = None,
) -> dict[str, Any]:
    """Write the TensorRT flavour to ``trt_path`` and (unless None) the CPU flavour to ``cpu_path``.

    With ``fp16_fallback`` the layers left in float run in FP16 in the TensorRT flavour (Casts and FP16
    weights in the ONNX: edgekd/export/fp16_fallback.py), so strongly typed TensorRT builds keep them
    in FP16; without it they stay FP32. The CPU flavour keeps them in FP32 either way.

    ``cpu_isa`` is (instruction-set class, its source) of the CPU that will run the CPU flavour; it
    decides how the flavour stores its weights (``cpu_encoding.choose_encoding``); None: this host.

    ``write_float(qm, path)`` writes the float-weight Q/DQ ONNX of step 1 when the model needs more
    than a one-input, one-output export (a detector with decode and NMS after ``qm``:
    edgekd/tasks/detect/quantize.py); None: ``export_onnx`` with ``input_shape``.
    """
    from edgekd.export.onnx_export import export_onnx

    if opset < 13:
        raise EdgekdError(f"INT8 ONNX needs opset >= 13 (per-channel DequantizeLinear), got {opset}; pass --opset 13+")
    trt_path = Path(trt_path)
    float_path = trt_path.with_name(f".{trt_path.stem}.qdq-float.onnx")
    qm = qm.cpu().eval()
    try:
        # both flavours get the biases the fake-quant model computes with
        with qm.biases_on_grid(), qm.float_weights(), warnings.catch_warnings():
            # the activation scales are Python floats on purpose: constants in the graph
            warnings.filterwarnings("ignore", message=r".*Converting a tensor to a Python float.*")
            if write_float is not None:
                write_float(qm, float_path)
            else:
                export_onnx(qm, float_path, input_shape=input_shape, opset=opset)
        model = onnx.load(str(float_path))
    finally:
        float_path.unlink(missing_ok=True)
    constants_to_initializers(model)
    matched = insert_weight_dq(model, qm)
    enabled = [n for n, q in qm.layers.items() if q.enabled]
    missing = sorted(set(enabled) - set(matched.values()))
    if missing:
        raise EdgekdError(f"the INT8 export found no ONNX node for the layers {missing}; report this model")
    cpu_scales = qm.cpu_output_scales()
    conv_outputs = {node: cpu_scales[layer] for node, layer in matched.items() if layer in cpu_scales}
    cpu = to_cpu_flavour(model, conv_outputs) if cpu_path is not None else None  # float layers stay FP32 there
    fp16 = cast_float_layers_to_fp16(model) if fp16_fallback else []
    _save(model, trt_path)
    info: dict[str, Any] = {
        "trt": str(trt_path),
        "quantized_layers": len(matched),
        "float_layers": list(qm.skipped),
        "fp16_layers": fp16,
        "qdq_pairs": sum(n.op_type == "QuantizeLinear" for n in model.graph.node),
    }
    if cpu is not None:
        isa, source = cpu_isa or (host_isa(), "this host's CPU (CPUID)")
        encoding = choose_encoding(isa, u8s8_pair_bound(cpu), isa_source=source)
        cpu = apply_encoding(cpu, encoding.name)
        _save(cpu, Path(cpu_path))
        info["cpu"] = str(cpu_path)
        info["cpu_encoding"] = encoding.as_dict()
        info["cpu_zero_point_0"] = sum(
            1
            for init in cpu.graph.initializer
            if init.name.endswith("_zero_point_u8") and int(numpy_helper.to_array(init)) == 0
        )
    return info


def onnx_dtype_name(elem_type: int) -> str:
    return TensorProto.DataType.Name(elem_type)


def export_fp32_folded(
    qm: QuantizedModel, path: str | Path, *, input_shape: tuple[int, int, int], opset: int = 17
) -> Path:
    """The BN-folded FP32 ONNX of ``qm`` (every quantizer off): the baseline that ORT's PTQ starts from."""
    from edgekd.export.onnx_export import export_onnx

    path = Path(path)
    skipped = list(qm.skipped)
    qm.enable_only(None)
    tmp = path.with_name(f".{path.stem}.raw.onnx")
    try:
        with qm.float_weights(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*Converting a tensor to a Python float.*")
            export_onnx(qm.cpu().eval(), tmp, input_shape=input_shape, opset=opset)
        model = onnx.load(str(tmp))
    finally:
        qm.set_skipped(skipped)
        tmp.unlink(missing_ok=True)
    constants_to_initializers(model)
    return _save(model, path)
