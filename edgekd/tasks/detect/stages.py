"""The stages that differ for detection: teacher, distill, quantize, export, bench and package on detectors.

They run in the same run directory, manifest and resume as classification's stages, and write the
same kinds of files (``teacher/teacher.json``, ``distill/student.pt``, ``quantize/student_int8.pt``
(edgekd/tasks/detect/int8_stages.py), ``export/model_fp32.onnx`` and the INT8 flavours with NMS
inside, ``bench/results.json`` with ``map50_95`` and ``map50`` for every model it scores, a
``package/`` bundle whose ``infer.py`` draws boxes and writes COCO-style JSON). The search stage for
detectors is in search.py. A searched student may have its own input side: the student checkpoint
stores it (``imgsz``), and the stages after distill use that, not ``detect.imgsz`` (the teacher's).
"""

from __future__ import annotations

from typing import Any

import torch

from edgekd.errors import CheckFailed, EdgekdError
from edgekd.io import atomic_write_json, atomic_write_text, sha256_file
from edgekd.stage import Stage, StageContext, StageResult
from edgekd.stages.common import searched_arch_input, teacher_path
from edgekd.tasks.detect.checkpoint import load_detector, save_detector
from edgekd.tasks.detect.common import (
    _params,
    detection_data,
    evaluate_map,
    hflip_for,
    nms_thresholds,
    student_pick,
    teacher_detector,
)
from edgekd.tasks.detect.export import OnnxDetector, export_detector_onnx
from edgekd.tasks.detect.int8_stages import DetectQuantizeStage, export_int8_detector
from edgekd.tasks.detect.kd import applicable
from edgekd.tasks.detect.models import build_detector
from edgekd.tasks.detect.search import DetectSearchStage
from edgekd.tasks.detect.train import train_detector

_KEYS = ("task", "teacher", "data", "seed", "detect")
_BEFORE_EXPORT = ("detect.nms",)  # what the stages before export do not read: --nms reruns export onwards


def teacher_guard(teacher_map: float, alone_map: float, guard) -> dict[str, Any] | None:
    """The teacher guard for detectors: is the teacher's mAP clearly above the student alone's (by
    ``distill.guard.margin``)? Detection only warns (no fallback scheme yet); None with the guard off."""
    if guard.mode == "off":
        return None
    better = teacher_map >= alone_map + guard.margin
    verdict = (
        f"teacher mAP@[.5:.95] {teacher_map:.4f} is {'clearly' if better else 'not clearly'} better than the "
        f"student alone {alone_map:.4f} (the --baseline run; margin {guard.margin:g})"
    )
    if not better:
        verdict += ": distilling from it may not help; train the teacher longer or choose a stronger one"
    return {
        "clearly_better": better,
        "verdict": verdict,
        "action": "warn",
        "teacher_map50_95": teacher_map,
        "student_alone_map50_95": alone_map,
    }


class DetectTeacherStage(Stage):
    name = "teacher"
    config_keys = _KEYS
    config_ignores = _BEFORE_EXPORT

    def external_inputs(self, config, run):
        return {"teacher_sha256": sha256_file(teacher_path(config)), "data": str(config.data.source)}

    def check(self, config, run):
        teacher_path(config)

    def run(self, ctx: StageContext) -> StageResult:
        cfg = ctx.config
        data = detection_data(ctx, cfg)
        ctx.reporter.info(f"teacher: {data.summary()}")
        if data.counts.clipped or data.counts.dropped:
            ctx.reporter.warn(
                f"data: {data.counts.clipped} boxes clipped to their image, "
                f"{data.counts.dropped} degenerate boxes dropped"
            )
        model, info = teacher_detector(ctx.run, cfg, data)
        path = teacher_path(cfg)
        m = evaluate_map(model, data, cfg)
        ctx.reporter.info(f"teacher: {info['arch']} mAP@[.5:.95] {m['map50_95']:.4f}, mAP@.5 {m['map50']:.4f}")
        atomic_write_json(
            ctx.dir / "teacher.json",
            {
                "task": "detect",
                "checkpoint": str(path),
                "sha256": sha256_file(path),
                "kind": info["kind"],
                "arch": {"name": info["arch"]},
                "parameters": _params(model),
                "classes": data.names,
                "category_ids": data.category_ids,
                "input": {"shape": [3, cfg.detect.imgsz, cfg.detect.imgsz], "normalization_source": "pixels / 255"},
                "data": {
                    "name": str(cfg.data.source),
                    "layout": data.source,
                    "train_samples": len(data.train),
                    "val_samples": len(data.val),
                    "val_source": "the dataset's val split",
                    "boxes_clipped": data.counts.clipped,
                    "boxes_dropped": data.counts.dropped,
                },
                "val_map50_95": m["map50_95"],
                "val_map50": m["map50"],
                "per_class_ap": m["per_class"],
            },
        )
        return StageResult(metrics={"val_map50_95": m["map50_95"], "val_map50": m["map50"]})


class DetectDistillStage(Stage):
    name = "distill"
    config_keys = (*_KEYS, "student", "distill")
    config_ignores = _BEFORE_EXPORT
    needs = ("teacher",)

    def external_inputs(self, config, run):
        """The searched student, when "auto" takes it from search/best_arch.json (its sha256)."""
        return searched_arch_input(config, run)

    def run(self, ctx: StageContext) -> StageResult:
        cfg, d = ctx.config, ctx.config.detect
        data = detection_data(ctx, cfg)
        teacher, _ = teacher_detector(ctx.run, cfg, data)
        name, imgsz = student_pick(cfg, ctx.run)
        student = build_detector(name, data.num_classes, imgsz)
        kd = {k: w for k, w in d.kd.items() if w > 0}
        for method in kd:
            reason = applicable(method, teacher, student, imgsz)
            if reason:
                raise EdgekdError(reason)
        torch.manual_seed(cfg.seed)
        common = {
            "epochs": cfg.distill.epochs,
            "lr": d.lr,
            "batch_size": d.batch_size,
            "imgsz": imgsz,
            "seed": cfg.seed,
            "hflip": hflip_for(cfg.data.source),
        }
        terms = ", ".join(f"{w:g}*{k}" for k, w in kd.items()) or "none"
        ctx.reporter.info(
            f"distill: {name} ({_params(student):,} parameters) from the teacher, KD {terms}, "
            f"{cfg.distill.epochs} epochs at {imgsz}px"
        )
        history = train_detector(student, data, teacher=teacher, kd=kd or None, log=ctx.reporter.info, **common)
        m = evaluate_map(student, data, cfg, imgsz=imgsz)
        metrics: dict[str, Any] = {
            "student": {"name": name},
            "imgsz": imgsz,
            "parameters": _params(student),
            "epochs": cfg.distill.epochs,
            "kd": kd,
            "val_map50_95": m["map50_95"],
            "val_map50": m["map50"],
            "loss_history": history["epochs"],
        }
        if cfg.distill.baseline:
            torch.manual_seed(cfg.seed)
            alone = build_detector(name, data.num_classes, imgsz)
            train_detector(alone, data, **common)
            b = evaluate_map(alone, data, cfg, imgsz=imgsz)
            metrics.update(
                baseline_val_map50_95=b["map50_95"],
                baseline_val_map50=b["map50"],
                kd_gain=m["map50_95"] - b["map50_95"],
            )
            guard = teacher_guard(ctx.upstream_metrics("teacher")["val_map50_95"], b["map50_95"], cfg.distill.guard)
            if guard is not None:
                metrics["guard"] = guard
                if not guard["clearly_better"]:
                    ctx.reporter.warn(f"distill: teacher guard: {guard['verdict']}")
        ctx.reporter.info(f"distill: student mAP@[.5:.95] {m['map50_95']:.4f}, mAP@.5 {m['map50']:.4f}")
        save_detector(
            ctx.dir / "student.pt",
            student,
            arch=name,
            names=data.names,
            category_ids=data.category_ids,
            imgsz=imgsz,
            metrics={k: v for k, v in metrics.items() if k != "loss_history"},
        )
        atomic_write_json(ctx.dir / "metrics.json", metrics)
        return StageResult(metrics={k: v for k, v in metrics.items() if k != "loss_history"})


class DetectExportStage(Stage):
    name = "export"
    config_keys = (*_KEYS, "export", "target")
    needs = ("teacher", "distill", "quantize")

    def run(self, ctx: StageContext) -> StageResult:
        from edgekd.runtimes.tensorrt.build import build_engine_script
        from edgekd.targets import load_target

        cfg, d = ctx.config, ctx.config.detect
        data = detection_data(ctx, cfg)
        student, info = load_detector(
            ctx.upstream("distill") / "student.pt", arch=None, num_classes=data.num_classes, imgsz=d.imgsz
        )
        imgsz = info["imgsz"]  # the student's own input side (a searched student's may differ)
        thresholds = nms_thresholds(d)
        nms = thresholds if d.nms == "efficient" else None  # --nms none: the raw head, decoded on the host
        path = export_detector_onnx(student, ctx.dir / "model_fp32.onnx", imgsz=imgsz, nms=nms, opset=cfg.export.opset)
        torch_map = ctx.upstream_metrics("distill")["val_map50_95"]
        onnx_m = evaluate_map(None, data, cfg, runner=OnnxDetector(path, nms=thresholds), imgsz=imgsz)
        diff = abs(onnx_m["map50_95"] - torch_map)
        parity = {
            "student": {
                "head": d.nms,
                "samples": len(data.val),
                "map50_95_pytorch": torch_map,
                "map50_95_onnx": onnx_m["map50_95"],
                "map50_onnx": onnx_m["map50"],
                "map_diff": diff,
                "max_map_diff": d.parity_max_map_diff,
                "passed": diff <= d.parity_max_map_diff,
            }
        }
        int8 = export_int8_detector(ctx, data, nms, parity)
        atomic_write_json(ctx.dir / "parity.json", parity)
        profile = load_target(cfg.target)
        script = build_engine_script(
            "model_int8.onnx" if int8["int8"] else "model_fp32.onnx",
            profile,
            input_name="images",
            input_shape=(3, imgsz, imgsz),
            int8=int8["int8"],
            fp16=profile.precision != "fp32",
        )
        atomic_write_text(ctx.dir / "build_engine.sh", script)
        (ctx.dir / "build_engine.sh").chmod(0o755)
        head = "NMS" if nms else "the raw head (--nms none; decode and NMS on the host)"
        ctx.reporter.info(
            f"export: ONNX with {head}; mAP@[.5:.95] ONNX Runtime {onnx_m['map50_95']:.4f} vs PyTorch "
            f"{torch_map:.4f} on {len(data.val)} validation images"
        )
        if not parity["student"]["passed"]:
            raise CheckFailed(
                f"ONNX parity failed: mAP differs by {diff:.4f} (allowed {d.parity_max_map_diff:g}); "
                f"see {ctx.dir / 'parity.json'}; to accept it, raise detect.parity_max_map_diff"
            )
        return StageResult(
            metrics={
                "opset": cfg.export.opset,
                "imgsz": imgsz,
                "nms": nms,
                "head": d.nms,
                "parity_map_diff": diff,
                "student_onnx_map50_95": onnx_m["map50_95"],
                **int8,
            }
        )


class DetectBenchStage(Stage):
    name = "bench"
    config_keys = (*_KEYS, "bench", "target")
    needs = ("teacher", "distill", "export")

    def run(self, ctx: StageContext) -> StageResult:
        from edgekd.tasks.detect.report import bench_results

        results = bench_results(ctx)
        return StageResult(metrics={k: v for k, v in results["summary"].items()})


class DetectPackageStage(Stage):
    name = "package"
    config_keys = (*_KEYS, "package", "target")
    needs = ("teacher", "distill", "export", "bench")

    def run(self, ctx: StageContext) -> StageResult:
        from edgekd.tasks.detect.bundle import build_detect_bundle

        return StageResult(metrics=build_detect_bundle(ctx))


STAGES = {
    stage.name: stage
    for stage in (
        DetectTeacherStage,
        DetectSearchStage,
        DetectDistillStage,
        DetectQuantizeStage,
        DetectExportStage,
        DetectBenchStage,
        DetectPackageStage,
    )
}

__all__ = ["STAGES"]
