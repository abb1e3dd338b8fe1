"""``edgekd profile``: measure a grid of single-layer models on this machine and write a latency table.

Each grid point (:mod:`edgekd.targets.grid`) is a one-layer ONNX model (a convolution with its ReLU,
depthwise, grouped and 1x1 convolutions, a GEMM, pooling, activations, memory-bound ops, an NMS)
built with ``onnx.helper``. It is
timed through TensorRT when the ``tensorrt`` package and a CUDA GPU are present, else through ONNX
Runtime on the CPU, in fresh sessions: the mean over sessions of each session's 10th percentile.
Noise from other processes only ever adds time, so a low percentile is robust on a shared machine;
the fastest run would be too optimistic for microsecond kernels (a benchmark run of 2026-11-23 with
the minimum underestimated mobile networks by 20-60%). The fixed cost of one
inference call, measured on a one-element model, is subtracted from every point and stored once as
``run_overhead_ms``. Entries are keyed by the layer signature that :mod:`edgekd.targets.graph_cost`
computes for the same model, so a network layer with the same shape reads the measured value; a
per-kind fit (``ms = a + b*MFLOPs + c*M elements``, non-negative least squares on relative error;
per op for memory-bound layers, against candidates for NMS) prices the rest, corrected for
convolutions by the nearby measured points (``grid.interpolate_conv``). The table is written
atomically to ``default_table_path(target)`` or ``--out``.
"""

from __future__ import annotations

import datetime as dt
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgekd.errors import EdgekdError
from edgekd.runtimes.tensorrt.build import tensorrt_available
from edgekd.runtimes.tensorrt.grid import tensorrt_timer
from edgekd.targets.graph_cost import Layer, layers_from_onnx
from edgekd.targets.grid import MEMORY_OPS, GridPoint, default_grid, quick_grid
from edgekd.targets.lut import KindFit, LatencyTable, PrecisionTable
from edgekd.targets.nms_cost import fit_nms, nms_inputs, nms_model

__all__ = ["GridPoint", "build_point", "chainable", "default_grid", "quick_grid", "run_profile", "tensorrt_available"]

OPSET = 17
CHAIN = 3  # copies in a chained measurement of a shape-keeping layer


def _conv_model(
    c_in: int, hw: int, c_out: int, k: int, stride: int, groups: int, relu: bool, repeat: int = 1
) -> onnx.ModelProto:
    """``repeat`` copies of Conv(+ReLU) in a chain (each with its own weights; repeat > 1 needs
    c_in == c_out and stride 1)."""
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    source = "x"
    for i in range(repeat):
        last = i == repeat - 1
        w = rng.standard_normal((c_out, c_in // groups, k, k)).astype(np.float32) * 0.1
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(np.zeros(c_out, np.float32), f"b{i}")]
        conv_out = f"c{i}" if relu else ("y" if last else f"a{i}")
        nodes.append(
            helper.make_node(
                "Conv",
                [source, f"w{i}", f"b{i}"],
                [conv_out],
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[k // 2] * 4,
                group=groups,
            )
        )
        source = conv_out
        if relu:
            source = "y" if last else f"a{i}"
            nodes.append(helper.make_node("Relu", [conv_out], [source]))
    return _model(nodes, [1, c_in, hw, hw], inits)


def _model(
    nodes: list[onnx.NodeProto],
    in_shape: list[int],
    inits: list[TensorProto],
    extra_inputs: int | list[list[int]] = 0,
    out_type: int = TensorProto.FLOAT,
) -> onnx.ModelProto:
    """A one-layer model: input ``x`` of ``in_shape`` plus ``x1, x2, ...`` (``extra_inputs`` more of
    the same shape, or of the listed shapes), output ``y``."""
    extra = [in_shape] * extra_inputs if isinstance(extra_inputs, int) else extra_inputs
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)]
    inputs += [helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, shp) for i, shp in enumerate(extra, 1)]
    graph = helper.make_graph(nodes, "layer", inputs, [helper.make_tensor_value_info("y", out_type, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return model


def _memory_op_model(kind: str, c: int, hw: int, c_out: int) -> onnx.ModelProto:
    """One memory-bound op on a ``[1, c, hw, hw]`` map (softmax: ``[1, c, hw, c_out]``, DFL bins)."""
    shape = [1, c, hw, hw]
    node = helper.make_node
    if kind == "add":
        return _model([node("Add", ["x", "x1"], ["y"])], shape, [], extra_inputs=1)
    if kind == "mul":  # squeeze-excitation gate: a per-channel gate (an activation) times the map
        return _model([node("Mul", ["x", "x1"], ["y"])], shape, [], extra_inputs=[[1, c, 1, 1]])
    if kind == "concat":
        return _model([node("Concat", ["x", "x1"], ["y"], axis=1)], shape, [], extra_inputs=1)
    if kind == "silu":
        return _model([node("Sigmoid", ["x"], ["g"]), node("Mul", ["x", "g"], ["y"])], shape, [])
    if kind in ("hardswish", "sigmoid", "relu"):
        op = {"hardswish": "HardSwish", "sigmoid": "Sigmoid", "relu": "Relu"}[kind]
        return _model([node(op, ["x"], ["y"])], shape, [])
    if kind == "resize":  # nearest 2x upsampling (a PAN/FPN neck)
        scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
        return _model([node("Resize", ["x", "", "scales"], ["y"], mode="nearest")], shape, [scales])
    if kind == "transpose":  # NCHW -> NHWC (a head flattening its maps)
        return _model([node("Transpose", ["x"], ["y"], perm=[0, 2, 3, 1])], shape, [])
    if kind == "slice":  # half of the channels (a CSP split)
        consts = [
            numpy_helper.from_array(np.array([0], np.int64), "starts"),
            numpy_helper.from_array(np.array([c // 2], np.int64), "ends"),
            numpy_helper.from_array(np.array([1], np.int64), "axes"),
        ]
        return _model([node("Slice", ["x", "starts", "ends", "axes"], ["y"])], shape, consts)
    if kind == "softmax":
        return _model([node("Softmax", ["x"], ["y"], axis=-1)], [1, c, hw, c_out], [])
    raise ValueError(f"unknown memory-bound grid kind {kind}")


def chainable(point: GridPoint) -> bool:
    """Whether the point's layer keeps its input shape, so that copies of it can be chained."""
    if point.kind in ("conv", "conv1x1", "gconv"):
        return point.c_in == point.c_out and point.stride == 1 and point.hw > 1
    return point.kind == "dwconv" and point.stride == 1


def build_point(point: GridPoint, repeat: int = 1) -> onnx.ModelProto:
    """The one-layer ONNX model of a grid point (``repeat`` chained copies for a chainable point)."""
    c, hw, co, k, s = point.c_in, point.hw, point.c_out, point.k, point.stride
    if repeat > 1 and not chainable(point):
        raise ValueError(f"grid point {point} cannot be chained")
    if point.kind == "conv":
        return _conv_model(c, hw, co, k, s, 1, relu=True, repeat=repeat)
    if point.kind == "gconv":
        return _conv_model(c, hw, co, k, s, point.groups, relu=True, repeat=repeat)
    if point.kind == "conv1x1":
        return _conv_model(c, hw, co, 1, s, 1, relu=True, repeat=repeat)
    if point.kind == "dwconv":
        return _conv_model(c, hw, c, k, s, c, relu=True, repeat=repeat)
    if point.kind == "gemm":
        rng = np.random.default_rng(0)
        w = numpy_helper.from_array(rng.standard_normal((co, c)).astype(np.float32), "w")
        b = numpy_helper.from_array(np.zeros(co, np.float32), "b")
        node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)
        return _model([node], [1, c], [w, b])
    if point.kind == "maxpool":
        node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[k, k], strides=[s, s], pads=[k // 2] * 4)
        return _model([node], [1, c, hw, hw], [])
    if point.kind == "gap":
        return _model([helper.make_node("GlobalAveragePool", ["x"], ["y"])], [1, c, hw, hw], [])
    if point.kind == "nms":  # c = classes, hw = candidate boxes
        return nms_model(hw, c)
    if point.kind in MEMORY_OPS:
        return _memory_op_model(point.kind, c, hw, co)
    if point.kind == "overhead":
        return _model([helper.make_node("Relu", ["x"], ["y"])], [1, 1], [])
    raise ValueError(f"unknown grid kind {point.kind}")


# ---- timing -------------------------------------------------------------------------------------
Timer = Callable[[Path, list[np.ndarray], int, int], float]


# "wall": elapsed time, what a user sees on a quiet machine. "cpu": the process's CPU time with ONNX
# Runtime's spinning threads told to sleep, i.e. the work done, which other processes on a shared
# machine do not inflate (with 1 thread it equals the quiet wall time; with n, up to n x it).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def ort_session(path: Path | str, threads: int, clock: str = "wall"):
    """An ONNX Runtime CPU session as the profile times it (sequential, all graph optimisations)."""
    import onnxruntime as ort

    if clock not in CLOCKS:
        raise EdgekdError(f"unknown clock {clock!r}; use 'wall' or 'cpu'")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if clock == "cpu":  # a spinning worker burns CPU time without doing work
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _ort_timer(threads: int | None, budget_s: float, clock: str = "wall") -> Timer:
    from edgekd.host import physical_cores

    n_threads = threads or physical_cores()

    def time_model(path: Path, inputs: list[np.ndarray], sessions: int, min_runs: int) -> float:
        medians = []
        for _ in range(sessions):
            session = ort_session(path, n_threads, clock)
            feed = {i.name: x for i, x in zip(session.get_inputs(), inputs, strict=True)}
            call = lambda s=session, f=feed: s.run(None, f)  # noqa: E731
            medians.append(_typical_time(call, min_runs, budget_s, clock=CLOCKS[clock]))
            del session
        return statistics.fmean(medians)

    return time_model


def _typical_time(
    call: Callable[[], object],
    min_runs: int,
    budget_s: float = 0.15,
    percentile: float = 10,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Seconds of ``call`` on ``clock`` at ``percentile`` (default: the 10th) over at least ``min_runs``
    runs (more while under ``budget_s`` of wall time)."""
    for _ in range(3):
        call()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - start < budget_s and len(times) < 2000):
        t0 = clock()
        call()
        times.append(clock() - t0)
    return float(np.percentile(times, percentile))


# ---- fitting ------------------------------------------------------------------------------------
def fit_kind(samples: list[tuple[float, float, float]]) -> KindFit:
    """Fit ``ms = a + b*MFLOPs + c*Melements`` (a, b, c >= 0) minimising relative error."""
    from scipy.optimize import nnls

    rows = np.array([[1.0, f / 1e6, e / 1e6] for f, e, _ in samples])
    ms = np.array([m for _, _, m in samples])
    weight = 1.0 / np.maximum(ms, 1e-4)
    coef, _ = nnls(rows * weight[:, None], ms * weight)
    pred = rows @ coef
    rel = np.abs(pred - ms) / np.maximum(ms, 1e-6)
    return KindFit(float(coef[0]), float(coef[1]), float(coef[2]), len(samples), float(np.median(rel)))


# Grid kinds -> layer kinds of graph_cost (the fit is per layer kind)
_LAYER_KIND = {"maxpool": "pool", "gap": "pool", "add": "eltwise", "mul": "eltwise", "concat": "data"}


def profile_runtime(profile, precisions: tuple[str, ...]) -> str:
    """The runtime that will time the grid for ``profile`` here; a one-line error when none can."""
    use_trt, why_not = tensorrt_available()
    if profile.runtime == "tensorrt" and not use_trt:
        raise EdgekdError(
            f"target {profile.name} runs TensorRT, but {why_not}; run `edgekd profile` on the device itself "
            "(or profile x86-cpu/arm-cpu here)"
        )
    runtime = "tensorrt" if (use_trt and profile.runtime == "tensorrt") else "onnxruntime"
    if runtime == "onnxruntime" and tuple(precisions) != ("fp32",):
        raise EdgekdError(
            "ONNX Runtime calibration measures fp32 layers only (INT8 on CPU needs the uint8 QDQ flavour); "
            "pass --precision fp32"
        )
    return runtime


def run_profile(
    target: str,
    *,
    grid: str = "default",
    precisions: tuple[str, ...] = ("fp32",),
    threads: int | None = None,
    sessions: int = 2,
    min_runs: int = 20,
    budget_s: float = 0.15,
    progress: Callable[[int, int, str], None] | None = None,
    clock: str = "wall",
) -> LatencyTable:
    """Measure the grid on this machine for ``target`` and return the table (not yet written).
    ``clock="cpu"`` times ONNX Runtime by CPU time (see ``CLOCKS``): for a machine shared with other jobs."""
    from edgekd.host import host_description
    from edgekd.targets.registry import load_target

    profile = load_target(target)
    points = quick_grid() if grid == "quick" else default_grid() if grid == "default" else None
    if points is None:
        raise EdgekdError(f"unknown grid {grid!r}; use 'quick' or 'default'")
    runtime = profile_runtime(profile, precisions)
    if clock not in CLOCKS or (clock == "cpu" and runtime == "tensorrt"):
        raise EdgekdError(f"clock must be 'wall' or 'cpu' ('cpu' for ONNX Runtime only), got {clock!r}")
    table = LatencyTable(
        target=profile.name,
        runtime=runtime,
        host=host_description(),
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        grid=grid,
        threads=threads,
        clock=clock,
    )
    rng = np.random.default_rng(0)
    total = len(points) * len(precisions)
    done = 0
    with tempfile.TemporaryDirectory(prefix="edgekd-profile-") as tmp:
        for precision in precisions:
            timer = tensorrt_timer(precision) if runtime == "tensorrt" else _ort_timer(threads, budget_s, clock)
            overhead = _time_point(GridPoint("overhead", 1, 1), Path(tmp), timer, rng, sessions, min_runs, runtime)[1]
            ptable = PrecisionTable(run_overhead_ms=overhead * 1e3)
            measured: list[tuple[GridPoint, Layer, float, float | None]] = []
            for point in points:
                layer, seconds = _time_point(point, Path(tmp), timer, rng, sessions, min_runs, runtime)
                # a layer never costs less than a fifth of its own call: guards against timing noise
                alone = max((seconds - overhead) * 1e3, 0.2 * seconds * 1e3)
                in_graph = None
                if chainable(point):
                    # the marginal cost of one more copy inside a graph: no per-call cost, no layout
                    # conversions at the graph's edges (ONNX Runtime's NCHWc reorders, TensorRT reformats)
                    _, chained = _time_point(point, Path(tmp), timer, rng, sessions, min_runs, runtime, CHAIN)
                    in_graph = max((chained - seconds) * 1e3 / (CHAIN - 1), 0.2 * alone)
                measured.append((point, layer, alone, in_graph))
                done += 1
                if progress is not None:
                    progress(done, total, point.label())
            ptable.graph_factors = _graph_factors(measured)
            samples: dict[str, list[tuple[float, float, float]]] = {}
            for _, layer, alone, in_graph in measured:
                ms = in_graph if in_graph is not None else alone * ptable.graph_factors.get(layer.kind, 1.0)
                ptable.entries[layer.key] = ms
                # per kind, and per op for memory-bound layers (Layer.fit_key)
                for fit_key in dict.fromkeys((layer.kind, layer.fit_key())):
                    samples.setdefault(fit_key, []).append((layer.flops, layer.elements(), ms))
            ptable.fits = {kind: fit_kind(s) for kind, s in samples.items() if kind != "nms"}
            if len(samples.get("nms", [])) >= 2:
                ptable.fits["nms"] = fit_nms([(e, ms) for _, e, ms in samples["nms"]])
            table.precisions[precision] = ptable
    return table


def _graph_factors(measured) -> dict[str, float]:
    """Per layer kind, the median of (cost inside a graph) / (cost alone) over the chainable points that
    take at least 10 us (shorter ones are mostly noise), clipped to [0.3, 1.2]; it scales the points of
    that kind that cannot be chained."""
    ratios: dict[str, list[float]] = {}
    for _, layer, alone, in_graph in measured:
        if in_graph is not None and alone >= 0.01:
            ratios.setdefault(layer.kind, []).append(in_graph / alone)
    return {kind: float(min(max(statistics.median(r), 0.3), 1.2)) for kind, r in ratios.items()}


def _time_point(
    point: GridPoint,
    folder: Path,
    timer: Timer,
    rng,
    sessions: int,
    min_runs: int,
    runtime: str = "onnxruntime",
    repeat: int = 1,
):
    model = build_point(point, repeat)
    layers = layers_from_onnx(model, runtime=runtime)
    if len(layers) != repeat and point.kind != "overhead":
        raise AssertionError(f"grid point {point} priced as {len(layers)} layers")
    path = folder / "layer.onnx"
    onnx.save(model, str(path))
    if point.kind == "nms":
        inputs = nms_inputs(point.hw, point.c_in, rng)
    else:
        inputs = []
        for value in model.graph.input:
            shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
            inputs.append(rng.standard_normal(shape).astype(np.float32))
    seconds = timer(path, inputs, sessions, min_runs)
    return (layers[0] if layers else None), seconds
