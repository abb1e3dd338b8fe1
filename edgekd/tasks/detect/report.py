"""The detection bench: teacher and student side by side (mAP, mAP@.5, parameters, size, ONNX Runtime
latency measured here, the target's modelled latency where the model supports it), and the gate on
the mAP drop. Writes ``bench/results.json`` (``map50_95`` and ``map50`` for every model it scores),
``results.md``, ``junit.xml``, ``pr_curve.png`` (precision-recall at IoU 0.5, per class, teacher and
student) and ``detections.png`` (validation images with the teacher's and the student's boxes).
"""

from __future__ import annotations

import json
from typing import Any

from edgekd.bench.junit import junit_xml
from edgekd.host import host_description, physical_cores
from edgekd.io import atomic_write_json, atomic_write_text
from edgekd.runtimes.onnxruntime.session import measure_latency
from edgekd.tasks.detect.common import detection_data, evaluate_map, nms_thresholds, student_imgsz, teacher_detector
from edgekd.tasks.detect.export import OnnxDetector
from edgekd.tasks.detect.plots import detections_grid, pr_curve_plot


def _gate(results: dict[str, Any], max_drop_points: float | None) -> list[dict[str, Any]]:
    """``--max-map-drop`` (``bench.gates.max_accuracy_drop_points``): the student's ONNX mAP@[.5:.95]
    against the teacher's, in points."""
    if max_drop_points is None:
        return []
    s = results["summary"]
    drop = 100 * s["map_drop"]
    ok = drop <= max_drop_points
    message = (
        f"mAP@[.5:.95] {s['student_onnx_map50_95']:.4f} (student, ONNX Runtime) vs teacher "
        f"{s['teacher_map50_95']:.4f}: "
        f"drop {drop:.2f} points "
        + (f"<= {max_drop_points:g}" if ok else f"> {max_drop_points:g} (over by {drop - max_drop_points:.2f} points)")
    )
    return [
        {
            "gate": "max_map_drop",
            "subject": "student onnx-fp32 onnxruntime",
            "status": "passed" if ok else "failed",
            "value": drop,
            "limit": max_drop_points,
            "message": message,
        }
    ]


def bench_results(ctx) -> dict[str, Any]:
    cfg, d = ctx.config, ctx.config.detect
    data = detection_data(ctx, cfg)
    onnx_path = ctx.upstream("export") / "model_fp32.onnx"
    teacher = json.loads((ctx.upstream("teacher") / "teacher.json").read_text())
    distill = ctx.upstream_metrics("distill")
    threads = cfg.bench.threads or physical_cores()
    ctx.reporter.info(f"bench: mAP of the student's ONNX in ONNX Runtime on {len(data.val)} validation images")
    imgsz = student_imgsz(ctx, cfg)  # the student's own input side; the teacher is scored at detect.imgsz
    onnx_m = evaluate_map(
        None, data, cfg, runner=OnnxDetector(onnx_path, threads=threads, nms=nms_thresholds(d)), imgsz=imgsz
    )
    teacher_m = evaluate_map(teacher_detector(ctx.run, cfg, data)[0], data, cfg)
    pr_curve_plot(
        {"teacher (PyTorch)": teacher_m["pr50"], "student (ONNX Runtime)": onnx_m["pr50"]}, ctx.dir / "pr_curve.png"
    )
    detections_grid(
        data.val, {"teacher": teacher_m["preds"], "student": onnx_m["preds"]}, data.names, ctx.dir / "detections.png"
    )
    latency = {}
    for batch in (1, 8):
        ctx.reporter.info(f"bench: ONNX Runtime latency, batch {batch}")
        latency[str(batch)] = measure_latency(
            {"student": str(onnx_path)},
            batch_size=batch,
            input_shape=(3, imgsz, imgsz),
            threads=threads,
            warmup=3,
            runs=cfg.bench.runs if batch == 1 else cfg.bench.throughput_runs,
            sessions=cfg.bench.sessions,
            seed=cfg.seed,
        )["student"]
    rows = [
        {
            "model": "teacher",
            "format": "pytorch-fp32",
            "runtime": "torch",
            "arch": teacher["arch"]["name"],
            "parameters": teacher["parameters"],
            "map50_95": teacher["val_map50_95"],
            "map50": teacher["val_map50"],
        },
        {
            "model": "student",
            "format": "pytorch-fp32",
            "runtime": "torch",
            "arch": distill["student"]["name"],
            "parameters": distill["parameters"],
            "map50_95": distill["val_map50_95"],
            "map50": distill["val_map50"],
        },
        {
            "model": "student",
            "format": "onnx-fp32",
            "runtime": "onnxruntime",
            "arch": distill["student"]["name"],
            "parameters": distill["parameters"],
            "map50_95": onnx_m["map50_95"],
            "map50": onnx_m["map50"],
            "bytes": onnx_path.stat().st_size,
            "file": "export/model_fp32.onnx",
            "latency": {b: {k: v for k, v in r.items() if k != "host"} for b, r in latency.items()},
        },
    ]
    rows[-1]["latency_b1"] = rows[-1]["latency"]["1"]
    summary = {
        "teacher_map50_95": teacher["val_map50_95"],
        "student_map50_95": distill["val_map50_95"],
        "student_onnx_map50_95": onnx_m["map50_95"],
        "student_onnx_map50": onnx_m["map50"],
        "map_drop": teacher["val_map50_95"] - onnx_m["map50_95"],
        "student_p50_ms": latency["1"]["p50_ms"],
    }
    rows[-1]["pytorch_map50_95"] = distill["val_map50_95"]  # the same student in PyTorch (the verdict's check)
    results: dict[str, Any] = {
        "task": "detect",
        "metric": "map50_95",
        "metric_label": "mAP@[.5:.95]",
        "teacher_pytorch_map50_95": teacher["val_map50_95"],
        "host": host_description(),
        "target": cfg.target,
        "models": rows,
        "summary": summary,
        "imgsz": imgsz,
        "teacher_imgsz": d.imgsz,
        "head": d.nms,
        "per_class_ap_onnx": onnx_m["per_class"],
    }
    results["gates"] = _gate(results, cfg.bench.gates.max_accuracy_drop_points)
    results["gates_failed"] = sum(g["status"] == "failed" for g in results["gates"])
    summary["gates_failed"] = results["gates_failed"]
    atomic_write_json(ctx.dir / "results.json", results)
    atomic_write_text(ctx.dir / "results.md", results_markdown(results))
    timed = {**results, "models": [r for r in rows if "latency_b1" in r]}
    atomic_write_text(ctx.dir / "junit.xml", junit_xml(timed, timestamp="", seconds=0.0))
    return results


def results_markdown(results: dict[str, Any]) -> str:
    lines = [
        "| model | format | runtime | arch | params | mAP@[.5:.95] | mAP@.5 | p50 ms (batch 1) | p50 ms (batch 8) |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results["models"]:
        lat = r.get("latency") or {}
        cells = [f"{lat[b]['p50_ms']:.2f}" if b in lat else "" for b in ("1", "8")]
        lines.append(
            f"| {r['model']} | {r['format']} | {r['runtime']} | {r['arch']} | {r['parameters']:,} | "
            f"{r['map50_95']:.4f} | {r['map50']:.4f} | {cells[0]} | {cells[1]} |"
        )
    s, h = results["summary"], results["host"]
    nms_note = (
        "raw head (--nms none): the latency leaves out decode and NMS, and the mAP decodes on the host"
        if results.get("head") == "none"
        else "NMS included"
    )
    text = "\n".join(lines) + "\n"
    text += (
        f"\nStudent (ONNX Runtime) vs teacher: mAP@[.5:.95] {-100 * s['map_drop']:+.2f} points. COCO mAP by "
        f"pycocotools on the validation split at {results['imgsz']}px. Latency: measured on this host "
        f"({h['cpu']}), ONNX Runtime {h['onnxruntime']}, {nms_note}; medians over fresh sessions.\n"
    )
    for g in results["gates"]:
        text += f"\nGate {g['gate']}: {g['status']} ({g['message']}).\n"
    return text
