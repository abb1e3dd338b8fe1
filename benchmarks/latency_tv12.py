"""Part 3 of benchmarks/latency_model.py (``--tv12``): issue 18's twelve torchvision classifiers at
224x224 on x86-cpu, measured with ONNX Runtime and estimated before (``--before-repo`` checkout with
``--before-lut``) and after (this checkout with ``--after-lut``) the detector-latency change."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from latency_common import estimates_of_checkout, git_head, measure_interleaved, rank_and_error

from edgekd.export.onnx_export import export_onnx
from edgekd.models import create_model
from edgekd.targets.latency import estimate_latency
from edgekd.targets.lut import load_table

TV12 = [
    "resnet18",
    "densenet121",
    "googlenet",
    "mobilenet_v3_small",
    "shufflenet_v2_x1_0",
    "efficientnet_b0",
    "mobilenet_v2",
    "mnasnet1_0",
    "mobilenet_v3_large",
    "resnet50",
    "squeezenet1_1",
    "regnet_x_400mf",
]


def run_tv12(args, report: dict) -> list[str]:
    """Issue 18's twelve classifiers at 224 (the set its AVX2 report used), measured here and estimated
    by this checkout (table ``args.lut`` or this run's profile) and by ``--before-repo`` with
    ``--before-lut`` (the model as it was)."""
    tmp = Path(tempfile.mkdtemp(prefix="edgekd-tv12-"))
    paths = {}
    for name in TV12:
        paths[name] = tmp / f"{name}.onnx"
        export_onnx(create_model({"name": f"tv:{name}"}), paths[name], input_shape=(3, 224, 224), dynamic_batch=False)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    feeds = {n: (lambda s: {s.get_inputs()[0].name: x}) for n in paths}
    measured, loads = measure_interleaved(
        paths, feeds, threads=args.threads, rounds=args.sessions, runs=lambda n: args.tv12_runs, clock=args.clock
    )
    table = load_table(args.after_lut)
    after = {n: estimate_latency(p, "x86-cpu", lut=table).ms for n, p in paths.items()}
    before = (
        estimates_of_checkout(args.before_repo, paths, args.before_lut) if args.before_repo and args.before_lut else {}
    )
    rows = [
        {
            "model": f"tv:{n}",
            "measured_p50_ms": measured[n]["p50_ms"],
            "measured_p10_ms": measured[n]["p10_ms"],
            "before_ms": before.get(n),
            "after_ms": after[n],
        }
        for n in TV12
    ]
    stats = {}
    for ref in ("measured_p50_ms", "measured_p10_ms"):
        meas = [r[ref] for r in rows]
        for key in ("before_ms", "after_ms") if before else ("after_ms",):
            stats[f"{key} vs {ref}"] = rank_and_error([r[key] for r in rows], meas)
    report["tv12"] = {
        "rows": rows,
        "stats": stats,
        "round_load_average": loads,
        "before": f"{args.before_repo} at {git_head(args.before_repo)} with {args.before_lut}" if before else None,
        "after_table": str(args.after_lut),
    }
    lines = [
        "## 3. Issue 18's twelve torchvision classifiers at 224x224 (x86-cpu, before and after)",
        "",
        f"Measured: ONNX Runtime {report['host']['onnxruntime']}, {args.threads} threads, batch 1, {args.clock} clock, "
        f"{args.sessions} "
        f"rounds of fresh sessions interleaved across models, {args.tv12_runs} timed runs each; load average at the "
        f"start of each round: {', '.join(f'{v:.1f}' for v in loads)}. Before: "
        + (
            f"edgekd at {git_head(args.before_repo)} (main, before this change) with a table from its own "
            f"`edgekd profile` ({args.before_lut.name}). "
            if before
            else "not run. "
        )
        + f"After: this checkout with its `edgekd profile` table ({Path(args.after_lut).name}). "
        "All estimates are modelled.",
        "",
        "| model | measured p50 ms | measured p10 ms | before ms | after ms | before / p50 | after / p50 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        b, p50 = r["before_ms"], r["measured_p50_ms"]
        lines.append(
            f"| {r['model']} | {r['measured_p50_ms']:.2f} | {r['measured_p10_ms']:.2f} | "
            f"{'' if b is None else f'{b:.2f}'} | {r['after_ms']:.2f} | "
            f"{'' if b is None else f'{b / p50:.2f}'} | {r['after_ms'] / p50:.2f} |"
        )
    lines += ["", "| estimate | against | Kendall tau | median abs relative error |", "|---|---|---:|---:|"]
    for label, st in stats.items():
        est, ref = label.split(" vs ")
        lines.append(
            f"| {est.split('_')[0]} | measured {ref.split('_')[1]} | {st['kendall_tau']:.3f} | "
            f"{100 * st['median_abs_rel_error']:.1f}% |"
        )
    lines += [
        "",
        "This host is AVX-512 VNNI; the issue's AVX2-only host (tau 0.79, median error 47% there) could not be "
        "validated here (no such CPU; timing under an emulator would be meaningless). The grid and the estimate "
        "are host-agnostic: `edgekd profile --target x86-cpu` on the AVX2 host measures the same layers there.",
        "",
    ]
    return lines
