"""Stage ``bench``: measured accuracy, latency and size of teacher and student, side by side.

Latency is measured with ONNX Runtime on this machine's CPU: batch 1 (p50/p90/p99 over
``bench.runs`` timed runs pooled from ``bench.sessions`` fresh sessions, teacher and student
interleaved, because ORT timing varies from one session to the next) and throughput at
``bench.throughput_batch``. Accuracy is the ONNX model's top-1 on the whole validation split.
Writes ``bench/results.json`` and ``bench/results.md``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgekd.bench import evaluate_accuracy, host_description, measure_latency, model_size
from edgekd.data import BatchIterator
from edgekd.io import atomic_write_json, atomic_write_text, sha256_file
from edgekd.pipeline import Stage, StageContext, StageResult, register_stage
from edgekd.stages.common import checked_teacher, normalization_from_teacher_json
from edgekd.targets import load_target


@register_stage
class BenchStage(Stage):
    name = "bench"
    config_keys = ("bench", "data", "seed", "target")
    needs = ("teacher", "distill", "export")

    def external_inputs(self, config, run):
        """A target given as a profile file is hashed by content, so an edited profile reruns bench."""
        path = Path(config.target)
        return {"target_profile_sha256": sha256_file(path)} if path.is_file() else {}

    def run(self, ctx: StageContext) -> StageResult:
        cfg = ctx.config.bench
        _, data = checked_teacher(ctx)
        norm = normalization_from_teacher_json(ctx.upstream("teacher"))
        export_dir = ctx.upstream("export")
        models = {"teacher": export_dir / "teacher_fp32.onnx", "student": export_dir / "model_fp32.onnx"}
        models["student_int8"] = export_dir / "model_int8_cpu.onnx"  # issue 5: the CPU flavour on this host
        models = {k: v for k, v in models.items() if v.is_file()}
        shape = tuple(data.input_shape)
        target = load_target(ctx.config.target)

        ctx.reporter.info(f"bench: latency at batch 1 ({cfg.runs} runs over {cfg.sessions} sessions each)")
        lat1 = measure_latency(
            models,
            batch_size=1,
            input_shape=shape,
            threads=cfg.threads,
            warmup=cfg.warmup,
            runs=cfg.runs,
            sessions=cfg.sessions,
            seed=ctx.config.seed,
        )
        ctx.reporter.info(f"bench: throughput at batch {cfg.throughput_batch}")
        latb = measure_latency(
            models,
            batch_size=cfg.throughput_batch,
            input_shape=shape,
            threads=cfg.threads,
            warmup=max(1, cfg.warmup // 2),
            runs=cfg.throughput_runs,
            sessions=cfg.sessions,
            seed=ctx.config.seed,
        )
        pytorch_top1 = {
            "teacher": ctx.upstream_metrics("teacher").get("val_top1"),
            "student": ctx.upstream_metrics("distill").get("val_top1"),
            "student_int8": ctx.run.stage_record("quantize").get("metrics", {}).get("val_top1"),  # fake quant
        }
        rows: list[dict[str, Any]] = []
        for name, path in models.items():
            ctx.reporter.info(f"bench: ONNX accuracy of the {name} on {len(data.val)} validation images")
            batches = BatchIterator(data.val, 256, shuffle=False, seed=0, normalization=norm)
            acc = evaluate_accuracy(path, batches, threads=cfg.threads)
            rows.append(
                {
                    "model": name,
                    "format": "onnx-int8 (cpu flavour)" if name == "student_int8" else "onnx-fp32",
                    "file": str(path.relative_to(ctx.run.path)),
                    **model_size(path),
                    "pytorch_top1": pytorch_top1.get(name),
                    "onnx_top1": acc["top1"],
                    "val_samples": acc["samples"],
                    "latency_b1": lat1[name],
                    "throughput": latb[name],
                }
            )
        distill = ctx.upstream_metrics("distill")
        teacher_parity = json.loads((export_dir / "parity.json").read_text()).get("teacher") or {}
        results = {
            "host": host_description(),
            "target": target.name,
            "latency_source": "measured on this host with ONNX Runtime (CPU)",
            "models": rows,
            "baseline_student_pytorch_top1": distill.get("baseline_val_top1"),
            "comparison": _compare(rows),
        }
        if "teacher" not in models:
            results["teacher_not_benchmarked"] = teacher_parity.get("reason", "export.export_teacher is off")
        if target.kind != "cpu":
            results["note"] = (
                f"latencies were measured on this host's CPU, not on {target.display_name}; "
                "the target's latency model comes with the search stage"
            )
        atomic_write_json(ctx.dir / "results.json", results)
        atomic_write_text(ctx.dir / "results.md", results_markdown(results))
        metrics = {f"{r['model']}_{k}": r[k] for r in rows for k in ("onnx_top1", "bytes")}
        metrics.update({f"{r['model']}_p50_ms": r["latency_b1"]["p50_ms"] for r in rows})
        metrics.update(results["comparison"])
        return StageResult(metrics=metrics)


def _compare(rows: list[dict[str, Any]]) -> dict[str, float]:
    by = {r["model"]: r for r in rows}
    if "teacher" not in by or "student" not in by:
        return {}
    t, s = by["teacher"], by["student"]
    return {
        "speedup_b1": t["latency_b1"]["p50_ms"] / s["latency_b1"]["p50_ms"],
        "throughput_ratio": s["throughput"]["throughput_ips"] / t["throughput"]["throughput_ips"],
        "size_ratio": s["bytes"] / t["bytes"],
        "accuracy_drop": t["onnx_top1"] - s["onnx_top1"],
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def results_markdown(results: dict[str, Any]) -> str:
    host = results["host"]
    lines = [
        "| model | format | params | size (KiB) | top-1 PyTorch (%) | top-1 ONNX (%) | "
        "p50 / p90 / p99 ms (batch 1) | throughput img/s (batch "
        f"{results['models'][0]['throughput']['batch_size'] if results['models'] else '-'}) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["models"]:
        lat, thr = r["latency_b1"], r["throughput"]
        lines.append(
            f"| {r['model']} | {r['format']} | {r['parameters']:,} | {r['bytes'] / 1024:.1f} | "
            f"{_pct(r['pytorch_top1'])} | {_pct(r['onnx_top1'])} | "
            f"{lat['p50_ms']:.3f} / {lat['p90_ms']:.3f} / {lat['p99_ms']:.3f} | {thr['throughput_ips']:.0f} |"
        )
    if results.get("baseline_student_pytorch_top1") is not None:
        lines.append(
            f"| student without KD (baseline) | pytorch | | | {_pct(results['baseline_student_pytorch_top1'])} | | | |"
        )
    c = results.get("comparison") or {}
    text = "\n".join(lines) + "\n"
    if c:
        text += (
            f"\nStudent vs teacher: {c['speedup_b1']:.2f}x faster at batch 1 (p50), "
            f"{c['throughput_ratio']:.2f}x the throughput, {100 * c['size_ratio']:.1f}% of the size, "
            f"top-1 {-100 * c['accuracy_drop']:+.2f} points against the teacher (ONNX, validation split).\n"
        )
    cores = f"{host.get('physical_cores', '?')} physical / {host.get('logical_cores', '?')} logical cores"
    text += (
        f"\nLatency: {results['latency_source']}; {host.get('cpu', 'unknown CPU')}, {cores}, "
        f"{results['models'][0]['latency_b1'].get('threads', '?') if results['models'] else '?'} threads, "
        f"onnxruntime {host.get('onnxruntime', '?')}. Medians over fresh sessions.\n"
    )
    if results.get("teacher_not_benchmarked"):
        text += f"\nThe teacher is not in this table: {results['teacher_not_benchmarked']}\n"
    if results.get("note"):
        text += f"\nNote: {results['note']}.\n"
    return text
