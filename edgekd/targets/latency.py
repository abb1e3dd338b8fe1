"""The latency model: a model's latency on a target, from a calibration table or a roofline.

Each layer (one fused kernel, see :mod:`edgekd.targets.graph_cost`) costs

    max(FLOPs / (peak * compute efficiency), bytes moved / (bandwidth * memory efficiency))
        + per-kernel overhead

at the layer's precision (peak and bytes per element depend on it), and the model costs the sum
plus one fixed per-inference overhead. Where ``edgekd profile`` has measured the target (a
:class:`~edgekd.targets.lut.LatencyTable`), the table is preferred: an exact entry for the layer's
shape, else the table's fit for the layer's kind; the roofline prices only what the table lacks.

Every estimate says where it came from (``source``): ``"lut"`` (every layer priced from the
table), ``"roofline"`` (none), or ``"lut+roofline"`` (some); estimates are modelled, not measured.

Peaks: INT8 uses the GPU's dense INT8 (not module totals that include DLAs); FP16 the dense FP16
tensor figure; FP32 the larger of TF32 tensor (TensorRT runs FP32 layers as TF32 on Ampere and
later unless told not to) and FP32 CUDA-core throughput. A CPU profile with null figures (x86-cpu:
"the machine edgekd runs on") gets them from this host's /proc/cpuinfo (cores x clock x SIMD
FLOPs per cycle), labelled as such.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgekd.errors import EdgekdError
from edgekd.targets.graph_cost import Layer, layers_from_model
from edgekd.targets.grid import CONV_KINDS, interpolate_conv, parse_conv_key
from edgekd.targets.lut import LatencyTable, PrecisionTable, find_table
from edgekd.targets.profile import TargetProfile
from edgekd.targets.registry import load_target

PRECISIONS = ("fp32", "fp16", "int8")
BYTES_PER_ELEMENT = {"fp32": 4, "fp16": 2, "int8": 1}

# edgekd defaults for the latency-model fields a profile leaves null, by profile kind. They are
# engineering estimates, not measurements: compute efficiency is the fraction of peak a TensorRT or
# MLAS convolution reaches on mid-sized layers; INT8 kernels reach a smaller fraction of their
# (doubled) peak; per-kernel overheads are typical launch + scheduling costs. The Jetson values
# were picked once, from back-of-envelope arithmetic on the Ultralytics YOLO11m figures (REFERENCES.md),
# before benchmarks/latency_model.py first ran, and not tuned after; that script compares them with
# the published YOLO11 n/s/m and ResNet-50 figures (so those rows are not a held-out test).
KIND_DEFAULTS: dict[str, dict[str, float]] = {
    "jetson": {
        "compute_efficiency": 0.35,
        "int8_efficiency": 0.25,
        "memory_efficiency": 0.7,
        "kernel_overhead_us": 8.0,
        "run_overhead_us": 100.0,
    },
    "gpu": {
        "compute_efficiency": 0.4,
        "int8_efficiency": 0.3,
        "memory_efficiency": 0.75,
        "kernel_overhead_us": 4.0,
        "run_overhead_us": 50.0,
    },
    "cpu": {
        "compute_efficiency": 0.5,
        "int8_efficiency": 0.35,
        "memory_efficiency": 0.5,
        "kernel_overhead_us": 3.0,
        "run_overhead_us": 15.0,
    },
}
# Relative compute efficiency of layer kinds (edgekd defaults): depthwise convolutions reuse each
# weight little and reach a small fraction of peak on GPUs and CPUs alike; pooling, elementwise and
# data-movement layers are memory bound (their FLOPs are priced at the full efficiency).
KIND_COMPUTE_FACTOR = {
    "conv": 1.0,
    "conv1x1": 0.8,
    "gemm": 0.8,
    "dwconv": 0.15,
    "pool": 1.0,
    "eltwise": 1.0,
    "data": 1.0,
    "gconv": 0.5,
    "nms": 1.0,
}

Source = Literal["lut", "roofline", "lut+roofline", "measured"]


@dataclass(frozen=True)
class RooflineFigures:
    """The numbers the roofline uses for one target and precision, each with where it came from."""

    peak_ops: float  # operations per second
    bandwidth: float  # bytes per second
    compute_efficiency: float
    memory_efficiency: float
    kernel_overhead_s: float
    run_overhead_s: float
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "peak_tops": self.peak_ops / 1e12,
            "bandwidth_gbs": self.bandwidth / 1e9,
            "compute_efficiency": self.compute_efficiency,
            "memory_efficiency": self.memory_efficiency,
            "kernel_overhead_us": self.kernel_overhead_s * 1e6,
            "run_overhead_us": self.run_overhead_s * 1e6,
            "notes": list(self.notes),
        }


def _simd_fp32_flops_per_cycle(flags: set[str]) -> tuple[int, str]:
    """FP32 FLOPs per cycle per core from the CPU's SIMD flags (2 FMA pipes assumed)."""
    if "avx512f" in flags:
        return 64, "AVX-512: 2 FMA x 16 lanes x 2"
    if "avx2" in flags and "fma" in flags:
        return 32, "AVX2+FMA: 2 FMA x 8 lanes x 2"
    if "asimd" in flags or "neon" in flags:
        return 16, "NEON: 2 FMA x 4 lanes x 2"
    return 8, "SSE: 4 lanes x 2"


def host_cpu_figures() -> dict[str, Any]:
    """Peak FP32/INT8 throughput of this machine's CPU, estimated from /proc/cpuinfo (not measured)."""
    from edgekd.host import _cpuinfo_blocks, cpu_model, physical_cores

    blocks = _cpuinfo_blocks()
    flags = set((blocks[0].get("flags") or blocks[0].get("Features") or "").split()) if blocks else set()
    mhz = 0.0
    for b in blocks:
        try:
            mhz = max(mhz, float(b.get("cpu MHz", 0)))
        except ValueError:
            pass
    if mhz <= 0:
        try:
            mhz = float(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()) / 1e3
        except (OSError, ValueError):
            mhz = 2000.0
    per_cycle, simd = _simd_fp32_flops_per_cycle(flags)
    cores = physical_cores()
    fp32 = cores * mhz * 1e6 * per_cycle
    int8 = fp32 * (4 if ("avx512_vnni" in flags or "avx_vnni" in flags or "asimddp" in flags) else 2)
    return {
        "fp32_ops": fp32,
        "int8_ops": int8,
        "bandwidth": 10e9 * cores,
        "note": (
            f"host CPU figures estimated, not measured: {cpu_model()}, {cores} cores x {mhz:.0f} MHz x "
            f"{per_cycle} FP32 FLOPs/cycle ({simd}); memory bandwidth: edgekd default 10 GB/s per core"
        ),
    }


def roofline_figures(profile: TargetProfile, precision: str) -> RooflineFigures:
    """Peak, bandwidth, efficiencies and overheads of ``profile`` at ``precision``."""
    if precision not in PRECISIONS:
        raise EdgekdError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    defaults = KIND_DEFAULTS[profile.kind]
    notes: list[str] = []

    def figure(name: str) -> float:
        value = getattr(profile, name)
        if value is None:
            notes.append(f"{name}={defaults[name]:g} (edgekd default for {profile.kind})")
            return defaults[name]
        return float(value)

    peak: float | None
    bandwidth = profile.memory_bandwidth_gbs * 1e9 if profile.memory_bandwidth_gbs else None
    if precision == "int8":
        tops = profile.gpu_int8_tops_dense or profile.int8_tops_dense
        peak = tops * 1e12 if tops else None
    elif precision == "fp16":
        peak = profile.fp16_tflops * 1e12 if profile.fp16_tflops else None
        if peak is None and profile.kind == "cpu" and profile.fp32_tflops:
            peak = profile.fp32_tflops * 1e12  # CPUs compute FP16 models in FP32 (ONNX Runtime MLAS)
    else:
        candidates = [v for v in (profile.tf32_tflops, profile.fp32_tflops) if v]
        if profile.runtime != "tensorrt" and profile.fp32_tflops:
            candidates = [profile.fp32_tflops]
        peak = max(candidates) * 1e12 if candidates else None
    if profile.kind == "cpu" and (peak is None or bandwidth is None):
        host = host_cpu_figures()
        if peak is None:
            peak = host["int8_ops"] if precision == "int8" else host["fp32_ops"]
        if bandwidth is None:
            bandwidth = host["bandwidth"]
        notes.append(host["note"])
    if peak is None:
        known = [p for p in PRECISIONS if _has_peak(profile, p)]
        hint = f"use --precision {' or '.join(known)}" if known else "add its figures to a profile YAML"
        raise EdgekdError(f"target {profile.name} has no {precision} throughput figure to model; {hint}")
    if bandwidth is None:
        raise EdgekdError(
            f"target {profile.name} has no memory bandwidth figure; add memory_bandwidth_gbs to its profile"
        )
    efficiency = figure("int8_efficiency") if precision == "int8" else figure("compute_efficiency")
    return RooflineFigures(
        peak_ops=peak,
        bandwidth=bandwidth,
        compute_efficiency=efficiency,
        memory_efficiency=figure("memory_efficiency"),
        kernel_overhead_s=figure("kernel_overhead_us") * 1e-6,
        run_overhead_s=figure("run_overhead_us") * 1e-6,
        notes=tuple(notes),
    )


def _has_peak(profile: TargetProfile, precision: str) -> bool:
    if profile.kind == "cpu":
        return True
    if precision == "int8":
        return bool(profile.gpu_int8_tops_dense or profile.int8_tops_dense)
    if precision == "fp16":
        return bool(profile.fp16_tflops)
    return bool(profile.tf32_tflops or profile.fp32_tflops)


def roofline_layer_ms(layer: Layer, figures: RooflineFigures, precision: str) -> tuple[float, str]:
    """Milliseconds of one layer on the roofline, and what bounds it ("compute" or "memory")."""
    factor = KIND_COMPUTE_FACTOR.get(layer.kind, 1.0)
    compute = layer.flops / (figures.peak_ops * figures.compute_efficiency * factor)
    memory = layer.elements() * BYTES_PER_ELEMENT[precision] / (figures.bandwidth * figures.memory_efficiency)
    bound = "compute" if compute >= memory else "memory"
    return (max(compute, memory) + figures.kernel_overhead_s) * 1e3, bound


@dataclass
class LatencyEstimate:
    """A modelled latency: total milliseconds, where they came from, and the per-layer breakdown."""

    ms: float
    source: Source
    target: str
    precision: str
    batch: int
    per_layer: list[dict[str, Any]] = field(default_factory=list)
    input_shape: tuple[int, ...] | None = None
    flops: float = 0.0
    run_overhead_ms: float = 0.0
    table: str | None = None  # where the calibration table came from, when one was used
    notes: list[str] = field(default_factory=list)

    @property
    def modelled(self) -> bool:
        return self.source != "measured"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["input_shape"] = list(self.input_shape) if self.input_shape else None
        return out


def _resolve_table(lut: LatencyTable | str | os.PathLike | None, profile: TargetProfile) -> LatencyTable | None:
    if lut is None:
        return None
    if isinstance(lut, LatencyTable):
        return lut
    if isinstance(lut, str) and lut == "auto":
        return find_table(profile.name)
    from edgekd.targets.lut import load_table

    return load_table(lut)


def estimate_latency(
    model: Any,
    target: str | os.PathLike | TargetProfile,
    *,
    input_shape: tuple[int, int, int] | None = None,
    precision: str = "fp32",
    batch: int = 1,
    lut: LatencyTable | str | os.PathLike | None = "auto",
) -> LatencyEstimate:
    """Estimate the latency of ``model`` (an ``nn.Module``, an ``onnx.ModelProto`` or an .onnx path)
    on ``target`` (a name, a profile YAML path or a :class:`TargetProfile`) at ``precision`` and ``batch``.

    ``input_shape`` (C, H, W) is needed for a PyTorch model and for an ONNX model with a dynamic
    image size. ``lut="auto"`` uses the target's table from ``edgekd profile`` when one exists
    (see :mod:`edgekd.targets.lut`), a :class:`LatencyTable` or a path uses that table, ``None``
    gives the bare roofline.
    """
    profile = target if isinstance(target, TargetProfile) else load_target(target)
    if precision not in PRECISIONS:
        raise EdgekdError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise EdgekdError(f"batch must be a positive integer, got {batch!r}")
    table = _resolve_table(lut, profile)
    layers, shape = layers_from_model(
        model, input_shape=input_shape, batch=batch, runtime=table.runtime if table else profile.runtime
    )
    return price_layers(layers, profile, precision, table, batch=batch, input_shape=shape)


def _table_ms(ptable: PrecisionTable, layer: Layer, conv_points: list) -> float | None:
    """A layer's milliseconds from a calibration table: its exact entry, else the fit of its op (or
    kind) corrected, for convolutions, by the measured points nearby (``grid.interpolate_conv``)."""
    fit = ptable.fits.get(layer.fit_key()) or ptable.fits.get(layer.kind)
    if fit is None:
        return None
    ms = max(fit.predict(layer.flops, layer.elements()), 0.0)
    if layer.kind in CONV_KINDS:
        ms = interpolate_conv(layer.key, ms, conv_points) or ms
    return ms


def _conv_points(ptable: PrecisionTable) -> list[tuple[dict, float, float]]:
    """(parsed key, measured ms, fit ms) of the table's measured convolutions."""
    points = []
    for key, ms in ptable.entries.items():
        parsed = parse_conv_key(key)
        fit = ptable.fits.get(parsed["kind"]) if parsed else None
        if parsed is None or fit is None:
            continue
        hw_out = parsed["hw"] / parsed["s"]
        macs = parsed["n"] * parsed["o"] * hw_out * hw_out * parsed["k"] ** 2 * parsed["c"] / parsed["g"]
        elements = parsed["n"] * (parsed["c"] * parsed["hw"] ** 2 + parsed["o"] * hw_out**2)
        elements += parsed["o"] * parsed["c"] / parsed["g"] * parsed["k"] ** 2
        points.append((parsed, ms, max(fit.predict(2 * macs, elements), 1e-6)))
    return points


def price_layers(
    layers: list[Layer],
    profile: TargetProfile,
    precision: str,
    table: LatencyTable | None,
    *,
    batch: int = 1,
    input_shape: tuple[int, ...] | None = None,
) -> LatencyEstimate:
    """Price already-grouped ``layers`` on ``profile``: table entries, table fits, else the roofline."""
    figures: RooflineFigures | None = None
    notes: list[str] = []
    precision_table = table.precisions.get(precision) if table is not None else None
    if precision_table is None:
        figures = roofline_figures(profile, precision)
        notes.extend(figures.notes)
    conv_points = _conv_points(precision_table) if precision_table is not None else []
    per_layer: list[dict[str, Any]] = []
    total = 0.0
    sources: set[str] = set()
    for layer in layers:
        ms: float | None = None
        bound = ""
        if precision_table is not None:
            ms = precision_table.entries.get(layer.key)
            how = "lut"
            if ms is None:
                ms = _table_ms(precision_table, layer, conv_points)
                how = "lut-fit"
        if ms is None:
            if figures is None:
                figures = roofline_figures(profile, precision)
                notes.extend(figures.notes)
            ms, bound = roofline_layer_ms(layer, figures, precision)
            how = "roofline"
            sources.add("roofline")
        else:
            sources.add("lut")
        total += ms
        per_layer.append(
            {
                "name": layer.name,
                "op": layer.op,
                "kind": layer.kind,
                "fused": layer.fused,
                "flops": layer.flops,
                "bytes": layer.elements() * BYTES_PER_ELEMENT[precision],
                "ms": ms,
                "source": how,
                "bound": bound,
            }
        )
    if precision_table is not None:
        overhead_ms = precision_table.run_overhead_ms
    else:
        assert figures is not None
        overhead_ms = figures.run_overhead_s * 1e3
    source: Source = "lut" if sources == {"lut"} else "roofline" if "lut" not in sources else "lut+roofline"
    if not layers:
        source = "lut" if precision_table is not None else "roofline"
    return LatencyEstimate(
        ms=total + overhead_ms,
        source=source,
        target=profile.name,
        precision=precision,
        batch=batch,
        per_layer=per_layer,
        input_shape=tuple(input_shape) if input_shape else None,
        flops=sum(layer.flops for layer in layers),
        run_overhead_ms=overhead_ms,
        table=f"{table.target} ({table.grid} grid, {table.created})" if table is not None and precision_table else None,
        notes=notes,
    )
