"""``edgekd profile``: measure a grid of single-layer models on this machine and write a latency table.

Each grid point is a one-layer ONNX model (a convolution with its ReLU, a depthwise convolution, a
1x1 convolution, a GEMM, pooling, an elementwise Add, a Concat) built with ``onnx.helper``. It is
timed through TensorRT when the ``tensorrt`` package and a CUDA GPU are present, else through ONNX
Runtime on the CPU, in fresh sessions: the mean over sessions of each session's 10th percentile.
Noise from other processes only ever adds time, so a low percentile is robust on a shared machine;
the fastest run would be too optimistic for microsecond kernels (a benchmark run of 2026-11-23 with
the minimum underestimated mobile networks by 20-60%). The fixed cost of one
inference call, measured on a one-element model, is subtracted from every point and stored once as
``run_overhead_ms``. Entries are keyed by the layer signature that :mod:`edgekd.targets.graph_cost`
computes for the same model, so a network layer with the same shape reads the measured value; a
per-kind fit (``ms = a + b*MFLOPs + c*M elements``, non-negative least squares on relative error)
prices the rest. The table is written atomically to ``default_table_path(target)`` or ``--out``.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgekd.errors import EdgekdError
from edgekd.runtimes.tensorrt.build import tensorrt_available
from edgekd.runtimes.tensorrt.grid import tensorrt_timer
from edgekd.targets.graph_cost import Layer, layers_from_onnx
from edgekd.targets.lut import KindFit, LatencyTable, PrecisionTable

OPSET = 17
CHAIN = 3  # copies in a chained measurement of a shape-keeping layer
# Grid points above this many FLOPs are skipped: they take long to time and add little to the fit.
MAX_GRID_FLOPS = 6e8


@dataclass(frozen=True)
class GridPoint:
    """One single-layer benchmark: its kind and the arguments of its builder."""

    kind: str
    c_in: int
    hw: int
    c_out: int = 0
    k: int = 3
    stride: int = 1

    def label(self) -> str:
        return f"{self.kind} c{self.c_in}->{self.c_out} {self.hw}x{self.hw} k{self.k} s{self.stride}"


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
    nodes: list[onnx.NodeProto], in_shape: list[int], inits: list[TensorProto], extra_inputs: int = 0
) -> onnx.ModelProto:
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)]
    inputs += [helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, in_shape) for i in range(1, extra_inputs + 1)]
    graph = helper.make_graph(
        nodes, "layer", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return model


def chainable(point: GridPoint) -> bool:
    """Whether the point's layer keeps its input shape, so that copies of it can be chained."""
    if point.kind in ("conv", "conv1x1"):
        return point.c_in == point.c_out and point.stride == 1
    return point.kind == "dwconv" and point.stride == 1


def build_point(point: GridPoint, repeat: int = 1) -> onnx.ModelProto:
    """The one-layer ONNX model of a grid point (``repeat`` chained copies for a chainable point)."""
    c, hw, co, k, s = point.c_in, point.hw, point.c_out, point.k, point.stride
    if repeat > 1 and not chainable(point):
        raise ValueError(f"grid point {point} cannot be chained")
    if point.kind == "conv":
        return _conv_model(c, hw, co, k, s, 1, relu=True, repeat=repeat)
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
    if point.kind == "add":
        return _model([helper.make_node("Add", ["x", "x1"], ["y"])], [1, c, hw, hw], [], extra_inputs=1)
    if point.kind == "mul":  # squeeze-excitation style: a per-channel gate times the feature map
        gate = numpy_helper.from_array(np.ones((1, c, 1, 1), np.float32), "g")
        return _model([helper.make_node("Mul", ["x", "g"], ["y"])], [1, c, hw, hw], [gate])
    if point.kind == "concat":
        return _model([helper.make_node("Concat", ["x", "x1"], ["y"], axis=1)], [1, c, hw, hw], [], extra_inputs=1)
    if point.kind == "overhead":
        return _model([helper.make_node("Relu", ["x"], ["y"])], [1, 1], [])
    raise ValueError(f"unknown grid kind {point.kind}")


def quick_grid() -> list[GridPoint]:
    """A dozen points, one or two per kind: seconds to run (tests, a first look)."""
    return [
        GridPoint("conv", 16, 16, 16),
        GridPoint("conv", 32, 8, 32),
        GridPoint("conv1x1", 16, 16, 32, k=1),
        GridPoint("conv1x1", 64, 8, 64, k=1),
        GridPoint("dwconv", 32, 16, k=3),
        GridPoint("dwconv", 64, 8, k=3),
        GridPoint("gemm", 64, 1, 10),
        GridPoint("gemm", 256, 1, 100),
        GridPoint("gap", 64, 8),
        GridPoint("maxpool", 16, 16, k=3, stride=2),
        GridPoint("add", 16, 16),
        GridPoint("concat", 16, 8),
    ]


def default_grid() -> list[GridPoint]:
    """About 200 points spanning the layers of small CNNs at 8-224 px (a couple of minutes on 2 cores)."""
    points: list[GridPoint] = []
    for c in (8, 16, 32, 64, 128, 256):
        for hw in (4, 8, 16, 32, 56):
            points.append(GridPoint("conv", c, hw, c))
            points.append(GridPoint("conv", c, hw * 2, 2 * c, stride=2))
    for c_in, c_out, hw, k, s in ((1, 16, 8, 3, 1), (3, 16, 32, 3, 1), (3, 32, 224, 3, 2), (3, 64, 224, 7, 2)):
        points.append(GridPoint("conv", c_in, hw, c_out, k=k, stride=s))
    for c_in, c_out in ((16, 32), (32, 16), (32, 128), (128, 32), (64, 256), (256, 64), (96, 576), (576, 96)):
        for hw in (4, 8, 16, 32, 56):
            points.append(GridPoint("conv1x1", c_in, hw, c_out, k=1))
    for c in (16, 32, 96, 144, 384, 576):
        for hw in (7, 14, 28, 56):
            points.append(GridPoint("dwconv", c, hw, k=3))
        points.append(GridPoint("dwconv", c, 28, k=5))
        points.append(GridPoint("dwconv", c, 28, k=3, stride=2))
    # CIFAR / digits scale (the search space's resolutions): small maps, MobileNet-style channel counts
    for c in (24, 48, 96, 192, 384):
        for hw in (4, 8, 16, 32):
            points.append(GridPoint("dwconv", c, hw, k=3))
        points.append(GridPoint("dwconv", c, 16, k=3, stride=2))
    for c_in, c_out in ((16, 96), (96, 16), (32, 192), (192, 32), (64, 384), (384, 64), (32, 32), (128, 128)):
        for hw in (4, 8, 16, 32):
            points.append(GridPoint("conv1x1", c_in, hw, c_out, k=1))
    for c_in, c_out in ((64, 10), (256, 10), (512, 10), (1280, 10), (512, 1000), (1024, 1000), (2048, 1000)):
        points.append(GridPoint("gemm", c_in, 1, c_out))
    for c, hw in ((16, 32), (64, 16), (256, 8), (64, 56), (1280, 7), (512, 14)):
        points.append(GridPoint("gap", c, hw))
        points.append(GridPoint("add", c, hw))
        points.append(GridPoint("mul", c, hw))
    for c, hw in ((16, 32), (64, 56), (64, 112)):
        points.append(GridPoint("maxpool", c, hw, k=3, stride=2))
    for c, hw in ((16, 32), (64, 16), (128, 28)):
        points.append(GridPoint("concat", c, hw))
    return [p for p in points if _point_flops(p) <= MAX_GRID_FLOPS]


def _point_flops(point: GridPoint) -> float:
    hw_out = math.ceil(point.hw / point.stride)
    if point.kind == "conv":
        return 2.0 * point.c_out * hw_out * hw_out * point.c_in * point.k * point.k
    if point.kind == "conv1x1":
        return 2.0 * point.c_out * hw_out * hw_out * point.c_in
    if point.kind == "dwconv":
        return 2.0 * point.c_in * hw_out * hw_out * point.k * point.k
    return float(point.c_in * point.hw * point.hw)


# ---- timing -------------------------------------------------------------------------------------
Timer = Callable[[Path, list[np.ndarray], int, int], float]


def _ort_timer(threads: int | None, budget_s: float) -> Timer:
    import onnxruntime as ort

    from edgekd.host import physical_cores

    n_threads = threads or physical_cores()

    def time_model(path: Path, inputs: list[np.ndarray], sessions: int, min_runs: int) -> float:
        medians = []
        for _ in range(sessions):
            options = ort.SessionOptions()
            options.intra_op_num_threads = n_threads
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.log_severity_level = 3
            session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
            feed = {i.name: x for i, x in zip(session.get_inputs(), inputs, strict=True)}
            medians.append(_typical_time(lambda s=session, f=feed: s.run(None, f), min_runs, budget_s))
            del session
        return statistics.fmean(medians)

    return time_model


def _typical_time(call: Callable[[], object], min_runs: int, budget_s: float = 0.15, percentile: float = 10) -> float:
    """Seconds of ``call`` at ``percentile`` (default: the 10th) over at least ``min_runs`` runs (more
    while under ``budget_s``)."""
    for _ in range(3):
        call()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - start < budget_s and len(times) < 2000):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
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
) -> LatencyTable:
    """Measure the grid on this machine for ``target`` and return the table (not yet written)."""
    from edgekd.host import host_description
    from edgekd.targets.registry import load_target

    profile = load_target(target)
    points = quick_grid() if grid == "quick" else default_grid() if grid == "default" else None
    if points is None:
        raise EdgekdError(f"unknown grid {grid!r}; use 'quick' or 'default'")
    runtime = profile_runtime(profile, precisions)
    table = LatencyTable(
        target=profile.name,
        runtime=runtime,
        host=host_description(),
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        grid=grid,
        threads=threads,
    )
    rng = np.random.default_rng(0)
    total = len(points) * len(precisions)
    done = 0
    with tempfile.TemporaryDirectory(prefix="edgekd-profile-") as tmp:
        for precision in precisions:
            timer = tensorrt_timer(precision) if runtime == "tensorrt" else _ort_timer(threads, budget_s)
            overhead = _time_point(GridPoint("overhead", 1, 1), Path(tmp), timer, rng, sessions, min_runs)[1]
            ptable = PrecisionTable(run_overhead_ms=overhead * 1e3)
            measured: list[tuple[GridPoint, Layer, float, float | None]] = []
            for point in points:
                layer, seconds = _time_point(point, Path(tmp), timer, rng, sessions, min_runs)
                # a layer never costs less than a fifth of its own call: guards against timing noise
                alone = max((seconds - overhead) * 1e3, 0.2 * seconds * 1e3)
                in_graph = None
                if chainable(point):
                    # the marginal cost of one more copy inside a graph: no per-call cost, no layout
                    # conversions at the graph's edges (ONNX Runtime's NCHWc reorders, TensorRT reformats)
                    _, chained = _time_point(point, Path(tmp), timer, rng, sessions, min_runs, repeat=CHAIN)
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
                samples.setdefault(layer.kind, []).append((layer.flops, layer.elements(), ms))
            ptable.fits = {kind: fit_kind(s) for kind, s in samples.items()}
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


def _time_point(point: GridPoint, folder: Path, timer: Timer, rng, sessions: int, min_runs: int, repeat: int = 1):
    model = build_point(point, repeat)
    layers = layers_from_onnx(model)
    if len(layers) != repeat and point.kind != "overhead":
        raise AssertionError(f"grid point {point} priced as {len(layers)} layers")
    path = folder / "layer.onnx"
    onnx.save(model, str(path))
    inputs = []
    for value in model.graph.input:
        shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
        inputs.append(rng.standard_normal(shape).astype(np.float32))
    seconds = timer(path, inputs, sessions, min_runs)
    return (layers[0] if layers else None), seconds
