"""How good is edgekd's latency model? Two checks, one table (benchmarks/results/latency_model.md).

    python benchmarks/latency_model.py [--threads 2] [--sessions 5] [--runs 60] [--lut TABLE.json]
                                       [--grid default|quick] [--skip-cpu] [--skip-jetson]

1. x86-cpu: for each architecture below (zoo networks, MobileNetV2-style width/expansion samples
   like the search space's, torchvision models at small resolution) the batch-1 latency is
   *measured* with ONNX Runtime (``--threads`` threads, ``--sessions`` fresh sessions per model,
   interleaved, medians; the bench stage's ``measure_latency``) and *modelled* twice: with the bare
   roofline (host figures estimated from /proc/cpuinfo) and after calibration with ``edgekd
   profile`` (run here first, on the same machine, unless ``--lut`` names an existing table).
   Reported: Kendall tau between modelled and measured, and the median |relative error|.
2. Jetson: roofline estimates (modelled, no calibration on a device) against published
   measurements: Ultralytics YOLO11 n/s/m at 640x640 with TensorRT, FP32/FP16/INT8, on AGX Orin
   64GB, Orin NX 16GB and Orin Nano Super (REFERENCES.md), and NVIDIA-AI-IOT/jetson_benchmarks'
   ResNet-50 at 224 on Xavier NX. The Jetson defaults in edgekd/targets/latency.py (efficiencies,
   overheads) were picked once, before this script first ran, from back-of-envelope arithmetic on
   the published YOLO11m figures, and not changed after: these rows are not a held-out test. The
   YOLO11 graphs are built from the ``ultralytics`` package's bundled YAML (random weights, nothing downloaded) and
   saved without weights under benchmarks/models/ (shapes are all the model needs), so reruns work
   without ultralytics (``pip install ultralytics opencv-python-headless`` to rebuild them).

Other helpers shared the 2 CPU cores while this ran; rerun on a quiet machine for cleaner timings.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from edgekd.bench import host_description  # noqa: E402
from edgekd.export.onnx_export import export_onnx  # noqa: E402
from edgekd.io import atomic_write_json, atomic_write_text  # noqa: E402
from edgekd.models import create_model  # noqa: E402
from edgekd.targets.graph_cost import torch_to_onnx  # noqa: E402
from edgekd.targets.latency import estimate_latency  # noqa: E402
from edgekd.targets.lut import load_table  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
MODELS = ROOT / "benchmarks" / "models"

# name -> (arch spec, input shape C,H,W)
CPU_MODELS: dict[str, tuple[dict, tuple[int, int, int]]] = {
    "cnn_small (digits 8x8)": ({"name": "cnn_small", "in_channels": 1}, (1, 8, 8)),
    "cnn_medium (digits 8x8)": ({"name": "cnn_medium", "in_channels": 1}, (1, 8, 8)),
    "resnet8": ({"name": "resnet8"}, (3, 32, 32)),
    "resnet20": ({"name": "resnet20"}, (3, 32, 32)),
    "resnet56": ({"name": "resnet56"}, (3, 32, 32)),
    "resnet8x4": ({"name": "resnet8x4"}, (3, 32, 32)),
    "resnet32x4": ({"name": "resnet32x4"}, (3, 32, 32)),
    "wrn_16_2": ({"name": "wrn_16_2"}, (3, 32, 32)),
    "wrn_40_2": ({"name": "wrn_40_2"}, (3, 32, 32)),
    "mobilenetv2 (w0.5, t6)": ({"name": "mobilenetv2"}, (3, 32, 32)),
    "mobilenetv2 w0.35 t3 (search-like)": ({"name": "mobilenetv2", "width_mult": 0.35, "expand_ratio": 3}, (3, 32, 32)),
    "mobilenetv2 w0.75 t4 (search-like)": ({"name": "mobilenetv2", "width_mult": 0.75, "expand_ratio": 4}, (3, 32, 32)),
    "mobilenetv2 w1.0 t2 (search-like)": ({"name": "mobilenetv2", "width_mult": 1.0, "expand_ratio": 2}, (3, 32, 32)),
    "tv:resnet18 @64": ({"name": "tv:resnet18"}, (3, 64, 64)),
    "tv:mobilenet_v2 @96": ({"name": "tv:mobilenet_v2"}, (3, 96, 96)),
    "tv:mobilenet_v3_small @112": ({"name": "tv:mobilenet_v3_small"}, (3, 112, 112)),
    "tv:shufflenet_v2_x0_5 @96": ({"name": "tv:shufflenet_v2_x0_5"}, (3, 96, 96)),
    "tv:squeezenet1_1 @96": ({"name": "tv:squeezenet1_1"}, (3, 96, 96)),
    "tv:efficientnet_b0 @64": ({"name": "tv:efficientnet_b0"}, (3, 64, 64)),
}

# Published measurements (REFERENCES.md): Ultralytics YOLO11 at 640x640, TensorRT, ms per image.
YOLO_PUBLISHED = {
    "jetson-agx-orin-64gb": {"n": (3.94, 2.60, 2.45), "s": (6.52, 3.68, 3.01), "m": (12.69, 6.79, 5.12)},
    "jetson-orin-nx-16gb": {"n": (8.05, 4.85, 4.37), "s": (14.13, 7.55, 5.63), "m": (30.72, 14.45, 10.19)},
    "jetson-orin-nano-super": {"n": (7.60, 4.91, 3.91), "s": (13.29, 7.30, 5.25), "m": (28.21, 13.99, 9.58)},
}
YOLO_SOURCE = "Ultralytics NVIDIA Jetson guide (YOLO11, 640x640, TensorRT; REFERENCES.md)"
DEFAULTS_NOTE = (
    "The Jetson defaults of edgekd/targets/latency.py (compute efficiency 0.35, INT8 0.25, memory 0.7, 8 us per "
    "kernel, 100 us per inference) were picked once, before this script first ran, from back-of-envelope "
    "arithmetic on the published YOLO11m figures, and not changed after; the rows are not a held-out test."
)


def measure(
    paths: dict[str, Path],
    shapes: dict[str, tuple[int, int, int]],
    *,
    threads: int,
    sessions: int,
    runs: int,
    clock: str = "wall",
) -> dict[str, dict]:
    """Batch-1 ONNX Runtime latency of every model: ``sessions`` fresh sessions each, interleaved between
    models (A1 B1 ... A2 B2 ...), 10 warm-up runs then ``runs`` timed runs per session
    (latency_common.measure_interleaved). Returns per model ``p50_ms`` (median of all runs pooled, as
    the bench stage reports) and ``p10_ms`` (median over sessions of each session's 10th percentile:
    the least disturbed runs, robust to other processes taking the cores)."""
    from latency_common import measure_interleaved

    rng = np.random.default_rng(0)
    inputs = {name: rng.standard_normal((1, *shapes[name])).astype(np.float32) for name in paths}
    feeds = {n: (lambda s, x=inputs[n]: {s.get_inputs()[0].name: x}) for n in paths}
    out, loads = measure_interleaved(
        paths, feeds, threads=threads, rounds=sessions, runs=lambda n: runs, warmup=10, clock=clock
    )
    for row in out.values():
        row["session_p10_ms"] = row.pop("round_p10_ms")
        row["round_load_average"] = loads
    return out


def kendall_tau(a: list[float], b: list[float]) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


# ---- part 1: x86-cpu ------------------------------------------------------------------------------
def run_cpu(args, report: dict) -> list[str]:
    torch.set_num_threads(min(2, args.threads))
    tmp = Path(tempfile.mkdtemp(prefix="edgekd-latbench-"))
    paths: dict[str, Path] = {}
    shapes: dict[str, tuple[int, int, int]] = {}
    for name, (spec, shape) in CPU_MODELS.items():
        model = create_model(spec)
        path = tmp / f"{len(paths)}.onnx"
        export_onnx(model, path, input_shape=shape, dynamic_batch=False)
        paths[name], shapes[name] = path, shape
    t0 = time.perf_counter()
    measured = measure(paths, shapes, threads=args.threads, sessions=args.sessions, runs=args.runs, clock=args.clock)
    measure_s = time.perf_counter() - t0
    # calibration
    t0 = time.perf_counter()
    if args.lut:
        table = load_table(args.lut)
        table_note = f"existing table {args.lut} ({table.grid} grid, {table.created})"
    else:
        from edgekd.targets.calibrate import run_profile

        table = run_profile("x86-cpu", grid=args.grid, threads=args.threads)
        table.save(RESULTS / "latency_model_x86_lut.json")
        n_layers = sum(len(t.entries) for t in table.precisions.values())
        table_note = (
            f"`edgekd profile --target x86-cpu` ({args.grid} grid, {n_layers} layers, "
            f"{time.perf_counter() - t0:.0f} s) run in this benchmark just before estimating"
        )
    rows = []
    for name in CPU_MODELS:
        roof = estimate_latency(paths[name], "x86-cpu", precision="fp32", lut=None)
        cal = estimate_latency(paths[name], "x86-cpu", precision="fp32", lut=table)
        exact = sum(1 for r in cal.per_layer if r["source"] == "lut")
        rows.append(
            {
                "model": name,
                "input": "x".join(map(str, shapes[name])),
                "mflops": roof.flops / 1e6,
                "measured_p50_ms": measured[name]["p50_ms"],
                "measured_p10_ms": measured[name]["p10_ms"],
                "session_p10_ms": measured[name]["session_p10_ms"],
                "roofline_ms": roof.ms,
                "lut_ms": cal.ms,
                "lut_source": cal.source,
                "lut_exact_layers": f"{exact}/{len(cal.per_layer)}",
            }
        )
    stats: dict[str, dict] = {}
    for ref in ("measured_p50_ms", "measured_p10_ms"):
        meas_v = [r[ref] for r in rows]
        for key in ("roofline_ms", "lut_ms"):
            est = [r[key] for r in rows]
            rel = [abs(e - m) / m for e, m in zip(est, meas_v, strict=True)]
            stats[f"{key} vs {ref}"] = {
                "kendall_tau": kendall_tau(est, meas_v),
                "median_abs_rel_error": statistics.median(rel),
            }
    report["cpu"] = {
        "rows": rows,
        "stats": stats,
        "threads": args.threads,
        "sessions": args.sessions,
        "runs": args.runs,
        "measure_seconds": measure_s,
        "calibration": table_note,
        "roofline_notes": estimate_latency(paths["resnet8"], "x86-cpu", lut=None).notes,
    }
    lines = [
        "## 1. x86-cpu: modelled against measured ONNX Runtime latency (batch 1)",
        "",
        f"Measured: ONNX Runtime {report['host']['onnxruntime']} CPU, {args.threads} threads, {args.clock} clock, "
        f"{args.sessions} fresh "
        f"sessions per model interleaved, {args.runs} timed runs per session; p50 = median of all runs, p10 = "
        "median over sessions of each session's 10th percentile (robust to the other jobs on the cores). "
        f"Calibration: {table_note}. Estimates are modelled.",
        "",
        "| model | input | MFLOPs | measured p50 ms | measured p10 ms | roofline ms (modelled) | "
        "after profile ms (modelled) | exact LUT layers | after profile vs p50 | after profile vs p10 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['input']} | {r['mflops']:.1f} | {r['measured_p50_ms']:.3f} | "
            f"{r['measured_p10_ms']:.3f} | {r['roofline_ms']:.3f} | {r['lut_ms']:.3f} | {r['lut_exact_layers']} | "
            f"{_pct(r['lut_ms'], r['measured_p50_ms'])} | {_pct(r['lut_ms'], r['measured_p10_ms'])} |"
        )
    lines += ["", "| estimate | against | Kendall tau | median abs relative error |", "|---|---|---:|---:|"]
    for label, st in stats.items():
        est, ref = label.split(" vs ")
        est_name = "roofline only" if est == "roofline_ms" else "after `edgekd profile`"
        lines.append(
            f"| {est_name} | measured {ref.split('_')[1]} | {st['kendall_tau']:.3f} | "
            f"{100 * st['median_abs_rel_error']:.1f}% |"
        )
    lines += [
        "",
        f"{len(rows)} architectures; goal after calibration: Kendall tau >= 0.8 and median |relative error| <= 25%.",
        "",
        f"Roofline figures for this host: {'; '.join(report['cpu']['roofline_notes'])}.",
        "",
    ]
    return lines


def _pct(est: float, ref: float) -> str:
    return f"{100 * (est - ref) / ref:+.0f}%"


# ---- part 2: Jetson -------------------------------------------------------------------------------
def strip_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph with every large initializer's data dropped (dims and type kept): shapes suffice."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for init in out.graph.initializer:
        if math.prod(init.dims) > 16:
            init.ClearField("raw_data")
            for f in ("float_data", "int32_data", "int64_data", "double_data"):
                init.ClearField(f)
    return out


def yolo_graph(variant: str) -> Path:
    """benchmarks/models/yolo11{variant}-640.onnx (weightless), built with ultralytics if missing."""
    path = MODELS / f"yolo11{variant}-640.onnx"
    if path.is_file():
        return path
    os.environ.setdefault("YOLO_OFFLINE", "1")
    try:
        from ultralytics import YOLO
    except ImportError as err:
        raise SystemExit(
            f"{path} is missing and ultralytics is not installed ({err}); "
            "pip install ultralytics opencv-python-headless, or pass --skip-jetson"
        ) from None
    model = YOLO(f"yolo11{variant}.yaml").model  # built from the bundled YAML: random weights, no download
    model = model.fuse().eval()
    for m in model.modules():
        if type(m).__name__ == "Detect":
            m.export, m.format = True, "engine"  # the head Ultralytics exports for TensorRT (boxes + classes)
    proto = torch_to_onnx(model, (3, 640, 640), batch=1)
    MODELS.mkdir(parents=True, exist_ok=True)
    onnx.save(strip_weights(proto), str(path))
    return path


def run_jetson(args, report: dict) -> list[str]:
    rows = []
    precisions = ("fp32", "fp16", "int8")
    for variant in ("n", "s", "m"):
        path = yolo_graph(variant)
        for device, table in YOLO_PUBLISHED.items():
            for precision, published in zip(precisions, table[variant], strict=True):
                est = estimate_latency(path, device, precision=precision, lut=None)
                rows.append(
                    {
                        "model": f"YOLO11{variant} 640",
                        "device": device,
                        "precision": precision,
                        "published_ms": published,
                        "modelled_ms": est.ms,
                        "gflops": est.flops / 1e9,
                        "source": YOLO_SOURCE,
                    }
                )
    # ResNet-50 at 224 on Xavier NX: 824 images/s with the GPU and both DLAs (INT8, jetson_benchmarks).
    # Modelled: the GPU's INT8 throughput at batch 8, scaled by module INT8 TOPS / GPU INT8 TOPS (the
    # DLAs' share); that scaling is an assumption of this benchmark, not something edgekd models.
    from edgekd.targets import load_target

    xnx = load_target("jetson-xavier-nx")
    r50 = create_model("tv:resnet50", num_classes=1000)
    est = estimate_latency(r50, xnx, input_shape=(3, 224, 224), precision="int8", batch=8, lut=None)
    gpu_ips = 8 / (est.ms / 1e3)
    module_ips = gpu_ips * xnx.int8_tops_dense / xnx.gpu_int8_tops_dense
    rows.append(
        {
            "model": "ResNet-50 224 (throughput, GPU + 2 DLA)",
            "device": "jetson-xavier-nx",
            "precision": "int8",
            "published_ms": 1e3 / 824,
            "modelled_ms": 1e3 / module_ips,
            "gflops": est.flops / 8 / 1e9,
            "source": "NVIDIA-AI-IOT/jetson_benchmarks: Xavier NX ResNet-50 824 images/s (REFERENCES.md)",
        }
    )
    for r in rows:
        r["ratio"] = r["modelled_ms"] / r["published_ms"]
    within = sum(1 for r in rows if 1 / 1.5 <= r["ratio"] <= 1.5)
    report["jetson"] = {"rows": rows, "within_1_5": within}
    lines = [
        "## 2. Jetson: roofline (modelled) against published measurements",
        "",
        "Modelled with the bare roofline (no calibration table: no device here). Published: "
        f"{YOLO_SOURCE}; ResNet-50: NVIDIA-AI-IOT/jetson_benchmarks, per image = 1/throughput. " + DEFAULTS_NOTE,
        "",
        "| model | device | precision | GFLOPs | published ms | modelled ms | modelled / published |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['device']} | {r['precision']} | {r['gflops']:.1f} | {r['published_ms']:.2f} | "
            f"{r['modelled_ms']:.2f} | {r['ratio']:.2f} |"
        )
    ratios = [r["ratio"] for r in rows]
    lines += [
        "",
        f"**Within a factor 1.5: {within} of {len(rows)} rows; modelled / published from {min(ratios):.2f} to "
        f"{max(ratios):.2f}, median {statistics.median(ratios):.2f}.**",
        "",
        "ResNet-50 row: the GPU's modelled INT8 throughput at batch 8, scaled by module TOPS / GPU TOPS "
        "(21/12) for the two DLAs: an assumption of this benchmark.",
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall", help="cpu: ORT's CPU time (a shared machine)"
    )
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--lut", type=Path, default=None, help="use this table instead of profiling first")
    parser.add_argument("--grid", choices=("default", "quick"), default="default")
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--skip-jetson", action="store_true")
    parser.add_argument("--tv12", action="store_true", help="part 3: issue 18's twelve classifiers, before/after")
    parser.add_argument("--tv12-runs", type=int, default=20)
    parser.add_argument("--after-lut", type=Path, default=RESULTS / "latency_model_x86_lut.json")
    parser.add_argument("--before-repo", type=Path, default=None, help="checkout of edgekd before the change")
    parser.add_argument("--before-lut", type=Path, default=None, help="its `edgekd profile` table")
    parser.add_argument("--out", type=Path, default=RESULTS / "latency_model.md")
    args = parser.parse_args()
    start = time.perf_counter()
    host = host_description()
    report: dict = {"host": host, "load_average_start": os.getloadavg()}
    lines = [
        "# Latency model: modelled against measured",
        "",
        f"Machine: {host['cpu']}, {host['physical_cores']} cores usable, {host['os']}, ONNX Runtime "
        f"{host['onnxruntime']}. Load average at start: {report['load_average_start'][0]:.1f} (other jobs shared "
        "the cores: rerun `python benchmarks/latency_model.py` on a quiet machine for cleaner timings).",
        "",
    ]
    if not args.skip_cpu:
        lines += run_cpu(args, report)
    if args.tv12:
        from latency_tv12 import run_tv12

        lines += run_tv12(args, report)
    if not args.skip_jetson:
        lines += run_jetson(args, report)
    report["seconds"] = time.perf_counter() - start
    report["load_average_end"] = os.getloadavg()
    lines.append(
        f"Wall time {report['seconds']:.0f} s; load average at the end {report['load_average_end'][0]:.1f}. "
        + "Command: `"
        + " ".join(["python benchmarks/latency_model.py", *sys.argv[1:]])
        + "`"
    )
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    atomic_write_json(args.out.with_suffix(".json"), report)
    print("\n".join(lines))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
