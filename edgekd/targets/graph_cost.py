"""Per-layer work of a model: FLOPs and elements moved, read from an ONNX graph (shape inference).

The latency model prices *layers*, not ONNX nodes: a layer is what one kernel of an inference
runtime does. Runtimes (TensorRT, ONNX Runtime) fuse elementwise epilogues into the producing
kernel (Conv + BN were folded at export; Conv + ReLU, Conv + SiLU (Sigmoid, Mul), Conv + residual
Add), and which ones they fuse differs by runtime, so this module groups nodes by the target
runtime's rules (:mod:`edgekd.targets.fusion`):

- an *anchor* (Conv, Gemm, MatMul, pooling, Concat, Resize, NonMaxSuppression, ...) starts a layer;
- an elementwise node joins the layer that produced one of its inputs when the runtime fuses it
  there; the other inputs of the joining node are read from memory (a residual);
- shape-only nodes (Reshape, Flatten, Shape, Constant, ...) cost nothing.

Graphs with data-dependent shapes (a detector's score filter, NMS and what follows) take those
shapes from ``observed``: the shapes of one reference run (:mod:`edgekd.targets.detector_latency`).

Counts are in *elements* (activations read, activations written, weights), not bytes, so the same
layer list serves every precision. FLOPs count a multiply-add as 2. A PyTorch model is exported to
ONNX in memory first (the TorchScript exporter, as edgekd's export stage does), so both paths see
the same graph.
"""

from __future__ import annotations

import copy
import io
import itertools
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

from edgekd.errors import EdgekdError
from edgekd.targets.fusion import Layer, group_layers
from edgekd.targets.fusion import attr as _attr
from edgekd.targets.onnx_ops import FREE_OPS

# Initializers this small keep their data for shape inference (shape constants of Reshape, Slice...).
_SHAPE_TENSOR_ELEMENTS = 16
_DATA_TYPES = frozenset(
    {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.BFLOAT16,
        onnx.TensorProto.DOUBLE,
        onnx.TensorProto.INT8,
        onnx.TensorProto.UINT8,
    }
)


def _dims(value_info: onnx.ValueInfoProto) -> list[int | None]:
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else None for d in shape.dim]


def _fix_inputs(model: onnx.ModelProto, names: set[str], input_shape: tuple[int, ...] | None, batch: int) -> None:
    """Give the data inputs (``names``) a concrete shape: ``batch`` and, for the first, ``input_shape``."""
    inputs = [i for i in model.graph.input if i.name in names]
    if not inputs:
        raise EdgekdError("the ONNX model has no input; pass a model that takes an image tensor")
    for n, value in enumerate(inputs):
        dims = value.type.tensor_type.shape.dim
        if n == 0 and input_shape is not None:
            if len(dims) != len(input_shape) + 1:
                raise EdgekdError(
                    f"input_shape {tuple(input_shape)} does not fit the model input {value.name!r} of rank "
                    f"{len(dims)}; pass (channels, height, width)"
                )
            for d, size in zip(list(dims)[1:], input_shape, strict=True):
                d.ClearField("dim_param")
                d.dim_value = int(size)
        if dims:
            dims[0].ClearField("dim_param")
            dims[0].dim_value = int(batch)
        unknown = [i for i, d in enumerate(dims) if not d.HasField("dim_value")]
        if unknown:
            raise EdgekdError(
                f"the ONNX input {value.name!r} has dynamic dimensions {unknown}; pass input_shape=(C, H, W) "
                "(or --input-shape C,H,W)"
            )


def load_onnx_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read an ONNX file (external weight data is not needed: only shapes are)."""
    p = Path(path)
    if not p.is_file():
        raise EdgekdError(f"ONNX file {p} does not exist; pass the path of an exported model")
    try:
        return onnx.load(str(p), load_external_data=False)
    except Exception as err:  # a protobuf decode error
        raise EdgekdError(f"{p} is not a readable ONNX model ({type(err).__name__}); re-export it") from err


def torch_to_onnx(model, input_shape: tuple[int, int, int], batch: int = 1) -> onnx.ModelProto:
    """Export a PyTorch model to an in-memory ONNX model at a fixed batch (TorchScript exporter)."""
    import torch

    from edgekd.models.prepare import cpu_eval_copy, supports_train

    if input_shape is None:
        raise EdgekdError("estimating a PyTorch model needs input_shape=(C, H, W); pass the model's input shape")
    in_place = isinstance(model, torch.nn.Module) and all(
        t.device.type == "cpu" for t in itertools.chain(model.parameters(), model.buffers())
    )
    modes = {m: m.training for m in model.modules()} if in_place else {}
    # A CPU model is traced in place (eval mode, restored after): a deep copy costs more than the trace.
    clone = model if in_place and supports_train(model) else cpu_eval_copy(model)
    example = torch.zeros((batch, *input_shape))
    buf = io.BytesIO()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tracing runs one tiny forward; more threads only contend on a busy machine
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(clone, (example,), buf, dynamo=False, opset_version=17, do_constant_folding=True)
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise EdgekdError(f"cannot trace the model to price its layers ({first}); check input_shape") from err
    finally:
        torch.set_num_threads(threads)
        if clone is model:
            for m, mode in modes.items():
                m.training = mode
    return onnx.load_from_string(buf.getvalue())


def layers_from_onnx(
    model: onnx.ModelProto | str | os.PathLike,
    *,
    input_shape: tuple[int, ...] | None = None,
    batch: int = 1,
    runtime: str = "tensorrt",
    observed: dict[str, tuple[list[int], bool]] | None = None,
) -> list[Layer]:
    """The fused layers of an ONNX model at ``batch`` (and ``input_shape`` for a dynamic input),
    grouped by ``runtime``'s fusion rules. ``observed`` (tensor -> (shape, holds float data)) fills
    the shapes that static inference leaves open."""
    if not isinstance(model, onnx.ModelProto):
        model = load_onnx_model(model)
    if batch < 1:
        raise EdgekdError(f"batch must be at least 1, got {batch}")
    graph = model.graph
    init_shapes = {i.name: list(i.dims) for i in graph.initializer}
    init_types = {i.name: i.data_type for i in graph.initializer}
    # Shape inference on a weightless skeleton (only tiny constants keep their data): much faster for
    # big models, and the weights themselves are not needed.
    small = [i for i in graph.initializer if math.prod(i.dims) <= _SHAPE_TENSOR_ELEMENTS]
    inputs = [i for i in graph.input if i.name not in init_shapes]
    big = [
        onnx.helper.make_tensor_value_info(i.name, i.data_type, list(i.dims))
        for i in graph.initializer
        if math.prod(i.dims) > _SHAPE_TENSOR_ELEMENTS
    ]
    # The TorchScript exporter copies shared constants through Identity nodes; ONNX's data propagation
    # does not look through them, so a Slice fed by one would lose its output shape. Resolve them here.
    by_name = {i.name: i for i in small}
    nodes = []
    for node in graph.node:
        source = node.input[0] if node.op_type == "Identity" and node.input else None
        if source is not None and source in init_shapes:
            init_shapes[node.output[0]] = init_shapes[source]
            if source in by_name:
                alias = onnx.TensorProto()
                alias.CopyFrom(by_name[source])
                alias.name = node.output[0]
                small.append(alias)
                by_name[alias.name] = alias
            else:
                dtype = init_types[source]
                init_types[node.output[0]] = dtype
                big.append(onnx.helper.make_tensor_value_info(node.output[0], dtype, init_shapes[source]))
            continue
        nodes.append(node)
    skeleton = _skeleton(model, nodes, inputs + big, small)
    _fix_inputs(skeleton, {i.name for i in inputs}, input_shape, batch)
    shapes, data = _infer_with_folding(skeleton, small)
    for name, dims in init_shapes.items():
        shapes[name] = dims
    for name, (dims, is_data) in (observed or {}).items():
        if name not in shapes or None in shapes[name]:
            shapes[name] = list(dims)
            if is_data:
                data.add(name)
    unresolved = [
        n
        for n in graph.node
        # NMS is priced from its inputs (the candidates); its output size is data-dependent
        if n.op_type not in FREE_OPS
        and n.op_type != "NonMaxSuppression"
        and any(t and (t not in shapes or None in shapes[t]) for t in n.output)
    ]
    if unresolved:
        first = unresolved[0]
        raise EdgekdError(
            f"ONNX shape inference left {len(unresolved)} node output(s) without a static shape (first: "
            f"{first.op_type} {first.name or first.output[0]}); export the model with static shapes "
            "(e.g. onnxsim) or pass input_shape"
        )
    return group_layers(list(graph.node), shapes, set(init_shapes), data, runtime)


def _skeleton(
    model: onnx.ModelProto, nodes: list[onnx.NodeProto], inputs: list, initializers: list[onnx.TensorProto]
) -> onnx.ModelProto:
    graph = onnx.helper.make_graph(nodes, model.graph.name or "g", inputs, list(model.graph.output), initializers)
    skeleton = onnx.helper.make_model(graph, opset_imports=list(model.opset_import))
    skeleton.ir_version = model.ir_version
    for fn in model.functions:
        skeleton.functions.append(fn)
    return skeleton


def _infer(skeleton: onnx.ModelProto) -> tuple[dict[str, list[int | None]], set[str]]:
    try:
        inferred = shape_inference.infer_shapes(skeleton, data_prop=True)
    except Exception as err:
        raise EdgekdError(f"ONNX shape inference failed ({type(err).__name__}: {err}); check the model") from err
    shapes: dict[str, list[int | None]] = {}
    data: set[str] = set()  # tensors that hold data (float or 8-bit), not shape arithmetic (int64)
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        shapes[vi.name] = _dims(vi)
        if vi.type.tensor_type.elem_type in _DATA_TYPES:
            data.add(vi.name)
    return shapes, data


_FOLD_LIMIT = 4096  # elements: shape arithmetic is small; never materialise a data tensor


def _infer_with_folding(
    skeleton: onnx.ModelProto, small: list[onnx.TensorProto]
) -> tuple[dict[str, list[int | None]], set[str]]:
    """Shape inference, folding shape arithmetic (Shape -> Gather -> Div -> Slice ...) that ONNX's own
    data propagation leaves open (it does not evaluate Div, for one), until every shape is known."""
    from onnx.reference import ReferenceEvaluator

    known = {i.name: numpy_helper.to_array(i) for i in small}

    def result(shapes, data):
        for name, value in known.items():
            shapes.setdefault(name, list(value.shape))
        return shapes, data

    for _ in range(10):
        shapes, data = _infer(skeleton)
        open_nodes = [n for n in skeleton.graph.node if any(t and None in shapes.get(t, [None]) for t in n.output)]
        if not open_nodes:
            return result(shapes, data)
        remaining, progress = [], False
        for node in skeleton.graph.node:
            values = None
            if node.op_type == "Shape" and node.input[0] in shapes and None not in shapes[node.input[0]]:
                dims = shapes[node.input[0]]
                start, end = _attr(node, "start", 0), _attr(node, "end", None)
                values = [np.array(dims[start:end], dtype=np.int64)]
            elif all(not t or t in known for t in node.input) and node.op_type not in ("RandomNormal", "RandomUniform"):
                try:
                    feeds = {t: known[t] for t in node.input if t}
                    values = ReferenceEvaluator(node).run(None, feeds)
                except Exception:
                    values = None
                if values is not None and any(np.asarray(v).size > _FOLD_LIMIT for v in values):
                    values = None
            if values is None:
                remaining.append(node)
                continue
            progress = True
            for name, value in zip(node.output, values, strict=False):
                known[name] = np.asarray(value)
        if not progress:
            return result(shapes, data)
        consts = [numpy_helper.from_array(v, k) for k, v in known.items()]
        skeleton = _skeleton(skeleton, remaining, list(skeleton.graph.input), consts)
    return result(*_infer(skeleton))


def layers_from_model(
    model, *, input_shape: tuple[int, ...] | None = None, batch: int = 1, runtime: str = "tensorrt"
) -> tuple[list[Layer], tuple[int, ...] | None]:
    """Layers of an ``nn.Module``, an ``onnx.ModelProto`` or an .onnx path; also the input shape used.

    A module with an ``arch_spec`` (every zoo model) is traced once per (spec, input shape, batch)."""
    if isinstance(model, str | os.PathLike | onnx.ModelProto):
        return layers_from_onnx(model, input_shape=input_shape, batch=batch, runtime=runtime), input_shape
    if input_shape is None:
        spec = getattr(model, "arch_spec", None) or {}
        raise EdgekdError(
            f"estimating {spec.get('name', type(model).__name__)} needs input_shape=(C, H, W); "
            "pass the input shape the model runs at"
        )
    spec = getattr(model, "arch_spec", None)
    key = None
    if isinstance(spec, dict):  # zoo/search models: the spec names the architecture (models/registry.py)
        key = (json.dumps(spec, sort_keys=True, default=str), tuple(input_shape), batch, runtime)
        if key in _SPEC_CACHE:
            return copy.deepcopy(_SPEC_CACHE[key]), input_shape
    proto = torch_to_onnx(model, tuple(input_shape), batch)
    layers = layers_from_onnx(proto, batch=batch, runtime=runtime)
    if key is not None:
        if len(_SPEC_CACHE) >= _SPEC_CACHE_SIZE:
            _SPEC_CACHE.pop(next(iter(_SPEC_CACHE)))
        _SPEC_CACHE[key] = copy.deepcopy(layers)
    return layers, input_shape


# Layers of models that carry an arch spec, by (spec, input shape, batch): a search estimates the same
# candidate more than once (budget check, Pareto plot), and tracing is the slow part.
_SPEC_CACHE: dict[tuple, list[Layer]] = {}
_SPEC_CACHE_SIZE = 256
