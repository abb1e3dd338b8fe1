"""Stage ``bench``: measured accuracy, latency, memory and size of every model, gated for CI.

For each runtime in ``bench.runtimes`` (ONNX Runtime CPU by default; CUDA/TensorRT providers,
PyTorch eager and TensorRT engines when this machine has them, else skipped with the reason) it
benches the teacher, the FP32 student and, when the export stage wrote one, the INT8 student
(``edgekd/runtimes/base.py`` says which file each runtime runs). Per model and runtime:

- latency at every batch of ``bench.batch_sizes``: p50/p90/p99 over ``bench.runs`` timed runs
  (``bench.throughput_runs`` above batch 1) pooled from ``bench.sessions`` fresh sessions,
  interleaved between models, after warm-up; throughput at the largest batch; peak memory;
- top-1 (and top-5) on the whole validation split, in that runtime.

Then the CI gates (``bench.gates``; ``edgekd/bench/gates.py``) are checked. The stage always
finishes and writes ``results.json``, ``results.md``, ``junit.xml`` and ``accuracy_latency.png``;
the CLI exits 1 afterwards when a gate failed, so CI gets both a red job and its files.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from pathlib import Path
from typing import Any

import torch

from edgekd.bench import host_description, model_size, physical_cores
from edgekd.bench.gates import evaluate_gates, load_baseline
from edgekd.bench.junit import junit_xml
from edgekd.bench.measure import accuracy, time_candidates
from edgekd.bench.plots import accuracy_latency_plot, search_front
from edgekd.data import BatchIterator
from edgekd.errors import EdgekdError
from edgekd.io import atomic_write_json, atomic_write_text, sha256_file
from edgekd.models import count_parameters
from edgekd.models.checkpoint import load_model_file
from edgekd.runtimes.base import ModelFiles
from edgekd.runtimes.onnxruntime.int8_encoding import ISA_DESCRIPTIONS, host_run_description
from edgekd.runtimes.registry import get_runtime
from edgekd.stage import Stage, StageContext, StageResult
from edgekd.stages.common import checked_teacher, normalization_from_teacher_json
from edgekd.targets import load_target


class BenchStage(Stage):
    name = "bench"
    config_keys = ("bench", "data", "seed", "target")
    needs = ("teacher", "distill", "export")

    def external_inputs(self, config, run):
        """A target given as a profile file is hashed by content, so an edited profile reruns bench;
        so is a gate's baseline file."""
        out = {}
        path = Path(config.target)
        if path.is_file():
            out["target_profile_sha256"] = sha256_file(path)
        baseline = config.bench.gates.baseline
        if baseline and Path(baseline).is_file():
            out["baseline_sha256"] = sha256_file(baseline)
        return out

    def check(self, config, run):
        gates = config.bench.gates
        if gates.baseline:
            load_baseline(gates.baseline)
        elif gates.max_regression_pct is not None:
            raise EdgekdError("--max-regression needs --baseline RESULTS_JSON (an earlier bench/results.json)")

    def run(self, ctx: StageContext) -> StageResult:
        started, t0 = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), time.perf_counter()
        cfg = ctx.config.bench
        teacher, data = checked_teacher(ctx)
        norm = normalization_from_teacher_json(ctx.upstream("teacher"))
        export_dir = ctx.upstream("export")
        distill_dir = ctx.upstream("distill")
        target = load_target(ctx.config.target)
        shape = tuple(data.input_shape)
        threads = cfg.threads or physical_cores()
        files = _model_files(export_dir, distill_dir, teacher.model, target.kind)
        pytorch_top1 = {
            ("teacher", "fp32"): ctx.upstream_metrics("teacher").get("val_top1"),
            ("student", "fp32"): ctx.upstream_metrics("distill").get("val_top1"),
            ("student", "int8"): (ctx.run.stage_record("quantize").get("metrics") or {}).get("val_top1"),
            ("student", "fp16"): None,
        }
        rows: list[dict[str, Any]] = []
        skipped: list[dict[str, str]] = []
        torch_threads = torch.get_num_threads()
        try:
            for name in cfg.runtimes:
                runtime = get_runtime(name)
                reason = runtime.unavailable()
                candidates = [] if reason else runtime.candidates(files)
                if not reason and not candidates:
                    reason = "this run has no model file that this runtime runs"
                if reason:
                    ctx.reporter.warn(f"bench: runtime {name} skipped: {reason}")
                    skipped.append({"runtime": name, "reason": reason})
                    continue
                rows += self._bench_runtime(ctx, runtime, candidates, files, data, norm, shape, threads, pytorch_top1)
        finally:
            torch.set_num_threads(torch_threads)
        if not rows:
            raise EdgekdError(
                f"no runtime could run here ({'; '.join(s['runtime'] + ': ' + s['reason'] for s in skipped)}); "
                "add --runtime onnxruntime"
            )
        for row in rows:
            row["file"] = str(row["file"].relative_to(ctx.run.path)) if row["file"] else None
        host = host_description()
        results: dict[str, Any] = {
            "host": host,
            "target": target.name,
            "latency_source": "measured on this host"
            + (f" ({host['cpu']}" + (f", GPU {host['gpu']})" if host.get("gpu") else ")")),
            "runtimes": list(cfg.runtimes),
            "batch_sizes": cfg.batches(),
            "models": rows,
            "skipped": skipped,
            "teacher_pytorch_top1": pytorch_top1[("teacher", "fp32")],
            "baseline_student_pytorch_top1": ctx.upstream_metrics("distill").get("baseline_val_top1"),
            "comparison": _compare(rows),
        }
        if "teacher" not in files.onnx_fp32:
            parity = json.loads((export_dir / "parity.json").read_text()).get("teacher") or {}
            results["teacher_not_benchmarked"] = parity.get("reason", "export.export_teacher is off")
        results["target_estimates"] = _target_estimates(ctx, files, target, shape)
        if target.kind != "cpu":
            results["note"] = (
                f"latencies were measured on this host, not on {target.display_name}; "
                "the bundle (`edgekd package`) builds a TensorRT engine on the device, where `infer.py --bench` "
                "measures it"
            )
        gates = cfg.gates
        baseline = load_baseline(gates.baseline) if gates.baseline else None
        results["gate_settings"] = gates.model_dump(mode="json")
        results["gates"] = [g.as_dict() for g in evaluate_gates(results, gates, baseline)]
        results["gates_failed"] = sum(g["status"] == "failed" for g in results["gates"])
        for g in results["gates"]:
            if g["status"] == "failed":
                ctx.reporter.warn(f"bench: gate {g['gate']} FAILED for {g['subject']}: {g['message']}")
        if cfg.plot:
            front, source = search_front(ctx.run.path)
            if accuracy_latency_plot(results, ctx.dir / "accuracy_latency.png", front=front, front_source=source):
                results["plot"] = "bench/accuracy_latency.png"
        atomic_write_json(ctx.dir / "results.json", results)
        atomic_write_text(ctx.dir / "results.md", results_markdown(results))
        atomic_write_text(
            ctx.dir / "junit.xml", junit_xml(results, timestamp=started, seconds=time.perf_counter() - t0)
        )
        return StageResult(metrics=_metrics(results))

    def _bench_runtime(self, ctx, runtime, candidates, files, data, norm, shape, threads, pytorch_top1):
        cfg = ctx.config.bench
        t0 = time.perf_counter()
        latency: dict[int, dict] = {}
        for batch in cfg.batches():
            runs = cfg.runs if batch == 1 else cfg.throughput_runs
            ctx.reporter.info(
                f"bench: {runtime.name}, batch {batch}: {len(candidates)} models, {runs} runs over "
                f"{cfg.sessions} sessions each"
            )
            latency[batch] = time_candidates(
                runtime,
                candidates,
                files,
                batch_size=batch,
                input_shape=shape,
                threads=threads,
                warmup=cfg.warmup if batch == 1 else max(1, cfg.warmup // 2),
                runs=runs,
                sessions=cfg.sessions,
                seed=ctx.config.seed,
            )
        rows = []
        for cand in candidates:
            ctx.reporter.info(f"bench: {runtime.name} accuracy of {cand.model} {cand.format} on {len(data.val)} images")
            batches = BatchIterator(data.val, 256, shuffle=False, seed=0, normalization=norm)
            acc = accuracy(runtime, cand, files, batches, threads=threads)
            per_batch = {str(b): latency[b][cand.key] for b in sorted(latency)}
            size = model_size(cand.path) if cand.path and cand.path.suffix == ".onnx" else None
            precision = cand.format.split("-")[-1]
            row = {
                "model": cand.model,
                "format": cand.format,
                "runtime": runtime.name,
                "provider": latency[min(latency)][cand.key]["provider"],
                "file": cand.path,
                "bytes": size["bytes"] if size else (cand.path.stat().st_size if cand.path else None),
                "parameters": size["parameters"] if size else _parameters(files, cand.model),
                "pytorch_top1": pytorch_top1.get((cand.model, precision)),
                "top1": acc["top1"],
                "top5": acc.get("top5"),
                "onnx_top1": acc["top1"] if cand.format.startswith("onnx") else None,
                "val_samples": acc["samples"],
                "latency": per_batch,
                "latency_b1": latency[min(latency)][cand.key],
                "throughput": latency[max(latency)][cand.key],
                "peak_host_mib": _max(r["peak_host_mib"] for r in per_batch.values()),
                "peak_host_added_mib": _max(r["peak_host_added_mib"] for r in per_batch.values()),
                "peak_gpu_mib": _max(r["peak_gpu_mib"] for r in per_batch.values()),
                "note": cand.note,
            }
            if cand.format == "onnx-int8" and row["provider"] == "CPUExecutionProvider" and cand.path:
                row["int8_encoding"] = host_run_description(cand.path)
            rows.append(row)
        for row in rows:
            row["seconds"] = (time.perf_counter() - t0) / len(rows)
        return rows


def _target_estimates(ctx: StageContext, files: ModelFiles, target, shape) -> list[dict[str, Any]]:
    """Modelled batch-1 latency of each exported model on the run's target (``edgekd latency``'s model:
    the calibration table of ``edgekd profile`` where there is one, else the roofline), so a Jetson or
    GPU target gets a figure for the device beside the host's measurement. Each carries its source."""
    from edgekd.targets.latency import estimate_latency

    int8 = files.int8_cpu if target.kind == "cpu" else files.int8_trt
    todo = [(m, "onnx-fp32", "fp32", p) for m, p in files.onnx_fp32.items()]
    if int8 is not None:
        todo.append(("student", "onnx-int8", "int8", int8))
    out = []
    for model, fmt, precision, path in todo:
        try:
            est = estimate_latency(path, target, input_shape=shape, precision=precision, batch=1)
        except EdgekdError as err:  # a graph the latency model cannot read: say so, do not fail the bench
            ctx.reporter.warn(f"bench: no latency estimate for the {model} {fmt} on {target.name}: {err}")
            out.append({"model": model, "format": fmt, "precision": precision, "ms": None, "error": str(err)})
            continue
        out.append(
            {
                "model": model,
                "format": fmt,
                "file": path.name,
                "precision": precision,
                "batch_size": 1,
                "ms": est.ms,
                "source": est.source,
                "target": est.target,
            }
        )
    return out


def _max(values) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _parameters(files: ModelFiles, name: str) -> int | None:
    loader = files.torch_models.get(name)
    try:
        return count_parameters(loader()) if loader else None
    except Exception:  # noqa: BLE001 - a module whose parameters cannot be counted (a graph program)
        return None


def _model_files(export_dir: Path, distill_dir: Path, teacher_model, target_kind: str) -> ModelFiles:
    onnx = {"teacher": export_dir / "teacher_fp32.onnx", "student": export_dir / "model_fp32.onnx"}
    student: list = []

    def load_student():
        if not student:
            student.append(load_model_file(distill_dir / "student.pt").model.eval())
        return student[0]

    engines = sorted(export_dir.glob("*.engine"))
    return ModelFiles(
        onnx_fp32={k: v for k, v in onnx.items() if v.is_file()},
        int8_cpu=_file(export_dir / "model_int8_cpu.onnx"),
        int8_trt=_file(export_dir / "model_int8.onnx"),
        torch_models={"teacher": lambda: teacher_model, "student": load_student},
        engines={"student": engines[0]} if engines else {},
        target_kind=target_kind,
    )


def _file(path: Path) -> Path | None:
    return path if path.is_file() else None


def _compare(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Teacher vs FP32 student (and INT8 vs FP32 student) in the first runtime that has both."""
    for runtime in dict.fromkeys(r["runtime"] for r in rows):
        by = {(r["model"], r["format"].split("-")[-1]): r for r in rows if r["runtime"] == runtime}
        t, s = by.get(("teacher", "fp32")), by.get(("student", "fp32"))
        if not (t and s):
            continue
        out = {
            "runtime": runtime,
            "speedup_b1": t["latency_b1"]["p50_ms"] / s["latency_b1"]["p50_ms"],
            "throughput_ratio": s["throughput"]["throughput_ips"] / t["throughput"]["throughput_ips"],
            "size_ratio": s["bytes"] / t["bytes"] if s["bytes"] and t["bytes"] else None,
            "accuracy_drop": t["top1"] - s["top1"],
        }
        q = by.get(("student", "int8"))
        if q:
            out["int8_speedup_b1_vs_fp32"] = s["latency_b1"]["p50_ms"] / q["latency_b1"]["p50_ms"]
            out["int8_size_ratio_vs_fp32"] = q["bytes"] / s["bytes"] if q["bytes"] and s["bytes"] else None
            out["int8_accuracy_drop_vs_fp32"] = s["top1"] - q["top1"]
            out["int8_encoding"] = q.get("int8_encoding")
            # INT8 is worth shipping to a CPU only where it is faster there (issue 15)
            out["cpu_recommendation"] = "int8" if out["int8_speedup_b1_vs_fp32"] >= 1.0 else "fp32"
        return out
    return {}


def _metrics(results: dict[str, Any]) -> dict[str, Any]:
    """The manifest's summary: per model/format of the first runtime, accuracy, bytes, p50; and the gates."""
    metrics: dict[str, Any] = {}
    first = results["models"][0]["runtime"]
    for r in results["models"]:
        if r["runtime"] != first:
            continue
        kind, precision = r["format"].split("-", 1)
        if kind == "onnx":  # teacher_onnx_top1, student_onnx_top1, student_int8_onnx_top1, ...
            prefix = r["model"] if precision == "fp32" else f"{r['model']}_{precision}"
            metrics[f"{prefix}_onnx_top1"] = r["top1"]
        else:
            prefix = f"{r['model']}_{kind}_{precision}"
            metrics[f"{prefix}_top1"] = r["top1"]
        metrics[f"{prefix}_bytes"] = r["bytes"]
        metrics[f"{prefix}_p50_ms"] = r["latency_b1"]["p50_ms"]
    metrics.update({k: v for k, v in results["comparison"].items() if k != "runtime"})
    metrics["gates_failed"] = results["gates_failed"]
    metrics["gates_checked"] = len(results["gates"])
    return metrics


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def results_markdown(results: dict[str, Any]) -> str:
    host, rows = results["host"], results["models"]
    b1 = rows[0]["latency_b1"]["batch_size"] if rows else 1
    bt = rows[0]["throughput"]["batch_size"] if rows else "-"
    lines = [
        f"| model | format | runtime | params | size (KiB) | top-1 PyTorch (%) | top-1 measured (%) | "
        f"p50 / p90 / p99 ms (batch {b1}) | throughput img/s (batch {bt}) | peak memory MiB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lat, thr = r["latency_b1"], r["throughput"]
        fmt = r["format"]
        enc = r.get("int8_encoding")
        if enc:
            run_as = "" if enc["run_as"] == enc["encoding"] else f", run as {enc['run_as'].upper()} here"
            fmt += f" ({enc['encoding'].upper()}{run_as}; host {enc['host_isa']})"
        size = "" if r["bytes"] is None else f"{r['bytes'] / 1024:.1f}"
        params = "" if r["parameters"] is None else f"{r['parameters']:,}"
        peak = r["peak_gpu_mib"] if r.get("peak_gpu_mib") is not None else r.get("peak_host_mib")
        lines.append(
            f"| {r['model']} | {fmt} | {r['runtime']} | {params} | {size} | "
            f"{_pct(r['pytorch_top1'])} | {_pct(r['top1'])} | "
            f"{lat['p50_ms']:.3f} / {lat['p90_ms']:.3f} / {lat['p99_ms']:.3f} | {thr['throughput_ips']:.0f} | "
            f"{'' if peak is None else f'{peak:.1f}'} |"
        )
    if results.get("baseline_student_pytorch_top1") is not None:
        lines.append(
            f"| student without KD (baseline) | pytorch | | | | {_pct(results['baseline_student_pytorch_top1'])} "
            "| | | | |"
        )
    text = "\n".join(lines) + "\n"
    batches = results.get("batch_sizes") or []
    if len(batches) > 2:
        text += "\n| model | format | runtime | " + " | ".join(f"p50 ms (batch {b})" for b in batches) + " |\n"
        text += "|---|---|---|" + "---:|" * len(batches) + "\n"
        for r in rows:
            cells = [f"{r['latency'][str(b)]['p50_ms']:.3f}" if str(b) in r["latency"] else "" for b in batches]
            text += f"| {r['model']} | {r['format']} | {r['runtime']} | " + " | ".join(cells) + " |\n"
    c = results.get("comparison") or {}
    if c:
        text += (
            f"\nStudent vs teacher ({c['runtime']}): {c['speedup_b1']:.2f}x faster at batch {b1} (p50), "
            f"{c['throughput_ratio']:.2f}x the throughput"
            + (f", {100 * c['size_ratio']:.1f}% of the size" if c.get("size_ratio") else "")
            + f", top-1 {-100 * c['accuracy_drop']:+.2f} points against the teacher (validation split).\n"
        )
        if "int8_speedup_b1_vs_fp32" in c:
            ratio = c.get("int8_size_ratio_vs_fp32")
            text += (
                f"INT8 vs FP32 student: {c['int8_speedup_b1_vs_fp32']:.2f}x faster at batch {b1} (p50)"
                + (f", {100 * ratio:.1f}% of the size" if ratio else "")
                + f", top-1 {-100 * c['int8_accuracy_drop_vs_fp32']:+.2f} points.\n"
            )
            enc = c.get("int8_encoding")
            if enc and c.get("cpu_recommendation") == "fp32":
                text += (
                    f"On this CPU ({ISA_DESCRIPTIONS.get(enc['host_isa'], enc['host_isa'])}) the INT8 CPU flavour "
                    f"({enc['run_as'].upper()}) is slower than FP32 at batch {b1}: for a CPU like this one, ship "
                    "model_fp32.onnx. Without VNNI, the exact INT8 encodings cannot use the fast int16 kernels; "
                    "quantize.weight_bits=7 lets U8S8 run exactly there.\n"
                )
    notes = [r for r in rows if r.get("note")]
    for r in notes:
        text += f"\n{r['model']} {r['format']} ({r['runtime']}): {r['note']}."
    if notes:
        text += "\n"
    cores = f"{host.get('physical_cores', '?')} physical / {host.get('logical_cores', '?')} logical cores"
    threads = rows[0]["latency_b1"].get("threads", "?") if rows else "?"
    text += (
        f"\nLatency: {results['latency_source']}, {cores}, {threads} threads, "
        f"onnxruntime {host.get('onnxruntime', '?')}. Medians over fresh sessions. Peak memory: the bench "
        "process's peak resident set while the model was loaded and run (allocated GPU memory for torch-cuda).\n"
    )
    for s in results.get("skipped", []):
        text += f"\nSkipped runtime {s['runtime']}: {s['reason']}.\n"
    gates = results.get("gates") or []
    if gates:
        failed = results.get("gates_failed", 0)
        text += f"\nGates: {len(gates) - failed} of {len(gates)} passed or skipped, {failed} failed.\n\n"
        text += "| gate | subject | result | detail |\n|---|---|---|---|\n"
        for g in gates:
            mark = {"passed": "pass", "failed": "**FAIL**", "skipped": "skipped"}[g["status"]]
            text += f"| {g['gate']} | {g['subject']} | {mark} | {g['message']} |\n"
    estimates = [e for e in results.get("target_estimates") or [] if e.get("ms") is not None]
    if estimates:
        text += (
            f"\nModelled latency on {results['target']} (batch 1; not measured: the latency model of "
            "`edgekd latency`, source `lut` = calibrated with `edgekd profile` on the device, `roofline` = "
            "datasheet figures):\n\n| model | format | precision | modelled ms | source |\n|---|---|---|---:|---|\n"
        )
        for e in estimates:
            text += f"| {e['model']} | {e['format']} | {e['precision']} | {e['ms']:.3f} | {e['source']} |\n"
    if results.get("teacher_not_benchmarked"):
        text += f"\nThe teacher is not in this table: {results['teacher_not_benchmarked']}\n"
    if results.get("note"):
        text += f"\nNote: {results['note']}.\n"
    return text
