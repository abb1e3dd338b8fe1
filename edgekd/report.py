"""``RUN_DIR/report.md``: the human summary of a run, rebuilt from the manifest and stage files.

What went in (teacher, data, target, settings), what came out (student, accuracy, latency, size,
side by side with the teacher), and how long each stage took. Written after every pipeline
invocation, so it always describes what the run directory holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgekd.bench.verdict import verdict
from edgekd.io import atomic_write_text
from edgekd.rundir import RunDir


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _detector_head(parity: dict[str, Any]) -> str:
    """How a detector's ONNX ends: NMS inside, or the raw head decoded on the host (``--nms none``)."""
    if parity.get("head") == "none":
        return "raw head (--nms none), decode and NMS on the host"
    return "detector with NMS inside"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _num(x: float | None, fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt)


def build_report(run: RunDir, stale: list[str] | None = None) -> str:
    manifest = run.manifest
    stages = manifest.get("stages", {})
    teacher = _read_json(run.path / "teacher" / "teacher.json") or {}
    distill = stages.get("distill", {}).get("metrics") or {}
    bench_md = run.path / "bench" / "results.md"
    parity = _read_json(run.path / "export" / "parity.json") or {}

    out = [f"# edgekd run: {run.path.name}", ""]
    out += ["## What went in", ""]
    if teacher:
        arch = (teacher.get("arch") or {}).get("name", teacher.get("kind"))
        data = teacher.get("data", {})
        out += [
            f"- Teacher: `{teacher['checkpoint']}` ({arch}, {teacher['kind']}, {teacher['parameters']:,} "
            f"parameters), sha256 `{teacher['sha256'][:16]}…`",
            f"- Data: {data.get('name')}: {data.get('train_samples')} training / {data.get('val_samples')} "
            f"validation images ({data.get('val_source')}), input {tuple(teacher['input']['shape'])}, "
            f"{len(teacher['classes'])} classes; normalisation {teacher['input']['normalization_source']}",
        ]
    chosen = (manifest.get("target_profile") or {}).get("chosen")
    out.append(f"- Target: {manifest.get('target')}" + (f" ({chosen})" if chosen else ""))
    if distill:
        out.append(
            f"- Student: {distill['student']['name']} ({distill['parameters']:,} parameters), distilled for "
            f"{distill['epochs']} epochs"
        )
    out += ["", "## What came out", ""]
    out += _stopped_lines(run, stages)
    if stale:
        out += [
            f"**Out of date:** {', '.join(stale)} ran on earlier inputs (an upstream stage was rerun since); "
            f"the numbers below mix old and new results. Refresh with `edgekd compress --out {run.path} --resume`.",
            "",
        ]
    if bench_md.is_file():
        out += [bench_md.read_text().rstrip(), ""]
    elif not any(rec.get("status") == "failed" for rec in stages.values()):
        out.append("No benchmark yet (run `edgekd bench` on this folder).\n")
    out += _bench_and_package_block(run, stages)
    if distill.get("val_map50_95") is not None:  # a detector (edgekd/tasks/detect/)
        line = (
            f"Validation mAP@[.5:.95] in PyTorch: teacher {_num(teacher.get('val_map50_95'), '.4f')}, distilled "
            f"student {distill['val_map50_95']:.4f} (mAP@.5 {distill['val_map50']:.4f}; KD: "
            f"{', '.join(f'{w:g} {k}' for k, w in (distill.get('kd') or {}).items()) or 'none'})"
        )
        if distill.get("baseline_val_map50_95") is not None:
            line += f", same student without KD {distill['baseline_val_map50_95']:.4f}"
        out += [line + ".", ""]
        if distill.get("guard"):
            out += [f"Teacher guard: {distill['guard']['verdict']}.", ""]
    elif distill:
        line = (
            f"Validation top-1 in PyTorch: teacher {_pct(teacher.get('val_top1'))}, distilled student "
            f"{_pct(distill['val_top1'])} (final epoch; best epoch {_pct(distill['best_val_top1'])})"
        )
        if distill.get("baseline_val_top1") is not None:
            line += (
                f", same student without KD {_pct(distill['baseline_val_top1'])} "
                f"(KD gain {100 * distill['kd_gain']:+.2f} points)"
            )
        out += [line + ".", ""]
        out += _scheme_lines(distill)
    out += _search_lines(run, stages)  # issue 4
    if parity.get("student", {}).get("map_diff") is not None:
        p = parity["student"]
        out += [
            f"ONNX export parity ({_detector_head(p)}, {p['samples']} validation images): mAP@[.5:.95] ONNX Runtime "
            f"{p['map50_95_onnx']:.4f} vs PyTorch {p['map50_95_pytorch']:.4f} (allowed difference "
            f"{p['max_map_diff']:g}).",
            "",
        ]
    elif parity.get("student"):
        p = parity["student"]
        out += [
            f"ONNX export parity (student, {p['samples']} validation images): max |logit difference| "
            f"{_num(p.get('max_abs_diff'), '.2e')}, top-1 agreement {_num(100 * p['top1_agreement'], '.1f')}%.",
            "",
        ]
    out += _int8_section(run, stages)  # issue 5
    out += ["## Stages", "", "| stage | status | seconds | outputs |", "|---|---|---:|---|"]
    for name, rec in stages.items():
        outputs = ", ".join(f"`{Path(p).name}`" for p in (rec.get("outputs") or {}))
        secs = rec.get("seconds")
        out.append(f"| {name} | {rec.get('status')} | {'' if secs is None else f'{secs:.1f}'} | {outputs} |")
    versions = manifest.get("versions", {})
    out += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), ""]
    # issue 20: always end with a plain verdict, and the thresholds that produced it
    out += verdict(_read_json(run.path / "bench" / "results.json"), stages, str(run.path)).lines()
    return "\n".join(out)


def _bench_and_package_block(run: RunDir, stages: dict[str, Any]) -> list[str]:
    """Issue 6: the accuracy/latency plot and the deployment bundle, when the run has them."""
    out: list[str] = []
    for png, caption in (
        ("accuracy_latency.png", "accuracy vs latency"),
        ("pr_curve.png", "precision-recall at IoU 0.5"),
        ("detections.png", "validation images with the teacher's and the student's boxes"),
    ):
        if (run.path / "bench" / png).is_file():
            out += [f"![{caption}](bench/{png})", ""]
    pkg = stages.get("package", {})
    m = pkg.get("metrics") or {}
    if pkg.get("status") == "done" and m.get("map50_95") is not None:  # a detector's bundle
        out += [
            f"Deployment bundle for {m['target']}: `package/{m['bundle']}/` ({m['model_file']}, {m['model_format']}; "
            f"mAP@[.5:.95] {m['map50_95']:.4f} in ONNX Runtime; Docker base `{m.get('base_image')}`). "
            "See its README.md.",
            "",
        ]
    elif pkg.get("status") == "done" and m.get("bundle"):
        tar = f" and `{m['tarball']}`" if m.get("tarball") else ""
        out += [
            f"Deployment bundle for {m['target']}: `package/{m['bundle']}/`{tar} ({m['model_file']}, "
            f"{m['model_format']}; top-1 {_pct(m.get('top1'))} on {m.get('samples')} validation images in ONNX "
            f"Runtime; Docker base `{m.get('base_image')}`). See its MODEL_CARD.md.",
            "",
        ]
    return out


def _stopped_lines(run: RunDir, stages: dict[str, Any]) -> list[str]:
    """Why the run stopped, when a stage failed: its error, and where its files were kept."""
    out = []
    for name, rec in stages.items():
        if rec.get("status") != "failed":
            continue
        kept = run.path / f".{name}.partial"
        where = f" Its files so far are kept in `{kept.name}/`." if kept.is_dir() and any(kept.iterdir()) else ""
        out += [f"**The run stopped at stage {name}:** {rec.get('error') or 'no message recorded'}.{where}", ""]
    return out


def write_report(run: RunDir, stale: list[str] | None = None) -> Path:
    return atomic_write_text(run.path / "report.md", build_report(run, stale))


# ---- issue 3: scheme, teacher guard, assistant, teacher cache ----------------------------------
def _scheme_lines(distill: dict[str, Any]) -> list[str]:
    out: list[str] = []
    guard = distill.get("guard")
    if guard:
        flag = "" if guard.get("clearly_better") else "**Teacher guard:** "
        out.append(f"{flag or 'Teacher guard: '}{guard['verdict']}.")
        if guard.get("action") not in (None, "none", "warn"):
            out.append(
                f"The guard chose `{guard['action']}` (scheme {guard.get('scheme_used')}, CE weight "
                f"{guard.get('ce_weight_used')})."
            )
    if distill.get("scheme") and distill["scheme"] != "offline":
        out.append(f"Scheme: `{distill['scheme']}`.")
    assistant = distill.get("assistant")
    if assistant:
        out.append(
            f"Teacher assistant (TAKD): {assistant['arch']['name']} ({assistant['parameters']:,} parameters), "
            f"validation top-1 {_pct(assistant['val_top1'])}; the student was distilled from it "
            "(`distill/assistant.pt`)."
        )
    cache = distill.get("cache")
    if cache:
        out.append(f"Teacher output cache: {cache['hits']} hits, {cache['misses']} misses ({cache['dir']}).")
    return out + [""] if out else out


# ---- search (issue 4) ---------------------------------------------------------------------------
def _search_lines(run: RunDir, stages: dict[str, Any]) -> list[str]:
    """How the student was found: budget, trials, the winner against the best hand-picked student."""
    m = stages.get("search", {}).get("metrics") or {}
    if not m or m.get("skipped"):
        return []
    teacher_ms = m.get("teacher_latency_ms")
    budget = f"{m['budget_ms']:.3g} ms" + (f" (teacher {teacher_ms:.3g} ms)" if teacher_ms else "")
    key, label, fmt = "proxy_top1", "proxy top-1", _pct
    if "best_proxy_map50_95" in m:  # a detector search (edgekd/tasks/detect/search.py)
        key, label, fmt = "proxy_map50_95", "proxy mAP@[.5:.95]", lambda v: "-" if v is None else f"{v:.4f}"
    size = f" at {m['best_imgsz']}px" if m.get("best_imgsz") else ""
    line = (
        f"Student search ({m.get('strategy')}, target {m.get('target')} {m.get('precision')}): budget {budget}, "
        f"latencies modelled ({m.get('latency_source')}); {m.get('trials_trained')} trials trained, "
        f"{m.get('trials_rejected')} rejected over the budget before training, {m.get('seconds', 0):.0f} s. "
        f"Chosen: {m['best']}{size} ({m.get('best_source')}), {label} {fmt(m.get('best_' + key))} at "
        f"{m['best_latency_ms']:.3g} ms"
    )
    if m.get("best_zoo"):
        line += f"; best hand-picked student within the budget: {m['best_zoo']} at {fmt(m.get('best_zoo_' + key))}"
    out = [line + ". Trials: `search/trials.jsonl`."]
    if (run.path / "search" / "pareto.png").is_file():
        out += ["", "![proxy accuracy vs modelled latency](search/pareto.png)"]
    return out + [""]


# ---- INT8 (issue 5) ----------------------------------------------------------------------------
def _int8_section(run: RunDir, stages: dict[str, Any]) -> list[str]:
    """INT8 beside FP32: accuracy (PyTorch), the two ONNX flavours, bytes, parity, layers kept in float."""
    q = stages.get("quantize", {}).get("metrics") or {}
    if not q:
        return []
    if q.get("mode") == "off":
        why = q["reason"] if q.get("skipped") else "--no-quantize"  # a task that has no INT8 yet says why
        return [f"INT8: skipped ({why}); the student is exported in FP32.", ""]
    metric = q.get("metric", "top1")  # "map50_95" for detectors
    label = "mAP@[.5:.95]" if metric == "map50_95" else "top-1"

    def value(key: str) -> str:
        v = q.get(f"{key}_{metric}")
        return _pct(v) if metric == "top1" else ("-" if v is None else f"{v:.4f}")

    out = ["## INT8", "", f"| model | {label} (PyTorch, validation) | ONNX file | bytes |", "|---|---:|---|---:|"]
    export = run.path / "export"

    def size(name: str) -> str:
        p = export / name
        return f"{p.stat().st_size:,}" if p.is_file() else "-"

    out.append(f"| student FP32 | {value('fp32_val')} | model_fp32.onnx | {size('model_fp32.onnx')} |")
    out.append(
        f"| student INT8 ({q.get('mode')}, {q.get('calibrator')} calibration"
        f"{' chosen by auto' if q.get('calibrator_setting') == 'auto' else ''}) | {value('val')} | "
        f"model_int8_cpu.onnx (ONNX Runtime CPU) | {size('model_int8_cpu.onnx')} |"
    )
    out.append(f"| same, TensorRT flavour | | model_int8.onnx | {size('model_int8.onnx')} |")
    out.append("")
    line = f"INT8 {label} {-q.get('drop_points', 0):+.2f} points against FP32 (calibration alone: {value('ptq_val')}"
    if q.get(f"qat_val_{metric}") is not None:
        kept = "QAT" if q.get("selected") == "qat" else "the calibrated weights, since QAT did not beat them"
        line += f"; after QAT: {value('qat_val')}; kept {kept}"
    line += f"); {q.get('quantized_layers')} of {q.get('layers')} layers in INT8"
    if q.get("float_layers"):
        line += f", kept in float (FP16 on TensorRT) to stay within {q.get('max_drop_points')} points: " + ", ".join(
            f"`{n}`" for n in q["float_layers"]
        )
    out += [line + ".", ""]
    parity = _read_json(export / "parity.json") or {}
    if parity.get("student_int8_cpu", {}).get("map50_95_onnx") is not None:
        cpu, trt = parity["student_int8_cpu"], parity["student_int8_trt"]
        out += [
            f"INT8 parity on {cpu['samples']} validation images ({label} in ONNX Runtime, {_detector_head(cpu)}): "
            "cpu flavour "
            f"{cpu['map50_95_onnx']:.4f}, TensorRT flavour {trt['map50_95_onnx']:.4f}, fake quant "
            f"{cpu['map50_95_fake_quant']:.4f}. Build a TensorRT engine on the target with `export/build_engine.sh`.",
            "",
        ]
    elif parity.get("student_int8_cpu"):
        out += [
            f"INT8 parity on {parity['student_int8_cpu']['samples']} validation images (top-1 agreement): fake quant "
            f"vs cpu flavour {100 * parity['student_int8_cpu']['top1_agreement']:.2f}%, vs TensorRT flavour "
            f"{100 * parity['student_int8_trt']['top1_agreement']:.2f}%, the two flavours "
            f"{100 * parity['int8_flavours']['top1_agreement']:.2f}%. Build a TensorRT engine on the target with "
            "`export/build_engine.sh`.",
            "",
        ]
    encoding = (_read_json(export / "int8.json") or {}).get("cpu_encoding")
    if encoding:
        out += [
            f"CPU flavour encoding: {encoding['name'].upper()}, chosen for {encoding['isa_description']} "
            f"({encoding['isa_source']}): {encoding['reason']}.",
            "",
        ]
    return out
