"""The quantize stage for detectors, and the INT8 half of their export stage.

``quantize`` (edgekd/tasks/detect/quantize.py for the method): calibrate the activation ranges on
training images (``quantize.calibrator``; ``auto`` keeps the calibrator with the best validation
mAP), measure each layer's sensitivity, fine-tune by quantization mimic in ``qat`` mode (kept only
if it beats calibration alone on the validation mAP), then keep the most sensitive layers in float
(FP16 on TensorRT) while the mAP drop exceeds ``quantize.max_drop`` points. Writes
``quantize/student_int8.pt``, ``calibration.json`` and ``metrics.json`` (FP32, PTQ and QAT-KD mAP,
the per-layer sensitivities, the mixed-precision steps).

Sensitivity is measured as the distortion of the detector's raw outputs, not as a per-layer mAP:
quantizing one layer alone moves mAP by thousandths, below the noise of a validation split of a
few hundred images, and costs a COCO evaluation per layer. The distortion is
``||y_q - y||^2 / ||y||^2`` over every class and box logit of the validation images (``y``: the FP32
outputs, ``y_q``: the outputs with only that layer and its input quantized), the noise-to-signal
ratio that TensorRT's and ONNX Runtime's own layer-wise debugging tools report. Mixed precision is
then decided by mAP itself.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from edgekd.errors import CheckFailed, EdgekdError
from edgekd.io import atomic_write_json
from edgekd.quant.sensitivity import layer_sensitivity, mixed_precision
from edgekd.stage import Stage, StageContext, StageResult
from edgekd.stages.quantize import resolve_weight_bits
from edgekd.tasks.detect.checkpoint import load_detector
from edgekd.tasks.detect.common import detection_data, evaluate_map, hflip_for, nms_thresholds, teacher_detector
from edgekd.tasks.detect.quantize import (
    QuantizedDetector,
    calibration_batches,
    load_detector_int8,
    prepare_detector_int8,
    qat_kd,
    save_detector_int8,
)
from edgekd.tasks.detect.transforms import iterate_batches

_KEYS = ("task", "teacher", "data", "seed", "detect", "student", "distill", "quantize")


@torch.no_grad()
def output_distortion(qdet: QuantizedDetector, batches: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    """``||y_q - y||^2 / ||y||^2`` over the concatenated class and box logits (module docstring)."""
    err = ref = 0.0
    for x, y in zip(batches, reference, strict=True):
        y_q = _flat(qdet(x))
        err += float((y_q - y).pow(2).sum())
        ref += float(y.pow(2).sum())
    return err / max(ref, 1e-12)


def _flat(out: dict[str, list[torch.Tensor]]) -> torch.Tensor:
    return torch.cat([m.flatten(1) for m in (*out["cls"], *out["reg"])], dim=1)


class DetectQuantizeStage(Stage):
    name = "quantize"
    config_keys = _KEYS
    config_ignores = ("detect.nms",)  # read from export on
    needs = ("teacher", "distill")

    def external_inputs(self, config, run):
        return {"weight_bits": resolve_weight_bits(config)}

    def run(self, ctx: StageContext) -> StageResult:
        cfg, q, d = ctx.config, ctx.config.quantize, ctx.config.detect
        if not q.enabled:
            metrics = {"mode": "off", "reason": "quantize.enabled is false (--no-quantize)"}
            atomic_write_json(ctx.dir / "metrics.json", metrics)
            return StageResult(metrics=metrics)
        data = detection_data(ctx, cfg)
        student_file = ctx.upstream("distill") / "student.pt"
        fp32, info = load_detector(student_file, arch=None, num_classes=data.num_classes, imgsz=d.imgsz)
        imgsz = info["imgsz"]  # the student's own input side (a searched student's may differ from detect.imgsz)
        saved = torch.load(student_file, map_location="cpu", weights_only=True)
        qdet = prepare_detector_int8(fp32)
        qdet.qm.set_weight_bits(resolve_weight_bits(cfg))
        n_calib = q.calib_batches * q.calib_batch_size
        batches = calibration_batches(data, imgsz, n_calib, d.batch_size)

        def val_map() -> float:
            return evaluate_map(qdet, data, cfg, imgsz=imgsz)["map50_95"]

        calibration = qdet.qm.calibrate(batches, q.calibrator, q.percentile, score=val_map)
        chosen = calibration["method"]
        how = chosen
        if q.calibrator == "auto":
            scores = ", ".join(f"{k} {v:.4f}" for k, v in calibration["auto_scores"].items())
            how = f"auto: {chosen}, best validation mAP of {scores}"
        ctx.reporter.info(
            f"quantize: {len(qdet.qm.layers)} layers, {len(qdet.qm.points)} activations, calibrated ({how}) on "
            f"{calibration['images']} training images"
        )
        fp32_map = evaluate_map(fp32, data, cfg, imgsz=imgsz)["map50_95"]
        ptq_map = val_map()
        metrics: dict[str, Any] = {
            "mode": q.mode,
            "metric": "map50_95",
            "calibrator": chosen,
            "calibrator_setting": q.calibrator,
            "calibrator_scores": calibration.get("auto_scores"),
            "calibration_images": calibration["images"],
            "weight_bits": qdet.qm.weight_bits,
            "fp32_val_map50_95": fp32_map,
            "ptq_val_map50_95": ptq_map,
            "layers": len(qdet.qm.layers),
            "activation_points": len(qdet.qm.points),
            "shared_scale_groups": len(qdet.qm.shared),
        }
        sensitivity = None
        if q.sensitivity or q.max_drop is not None:
            sensitivity = self._sensitivity(ctx, qdet, data, imgsz)
        if q.mode == "qat":
            self._qat(ctx, qdet, fp32, data, metrics, ptq_map, val_map, imgsz)
        else:
            metrics["selected"] = "ptq"
        int8_map = val_map()
        drop_points = 100 * (fp32_map - int8_map)
        if q.max_drop is not None and sensitivity is not None and drop_points > q.max_drop:
            mp = mixed_precision(
                qdet.qm, val_map, fp32=fp32_map, order=list(sensitivity["layers"]), max_drop=q.max_drop / 100
            )
            metrics["mixed_precision"] = mp
            int8_map = mp["score"]
            ctx.reporter.info(
                f"quantize: kept {len(mp['skipped'])} layer(s) in float to stay within --max-drop {q.max_drop:g} "
                "mAP points"
            )
        metrics.update(
            val_map50_95=int8_map,
            drop_points=100 * (fp32_map - int8_map),
            max_drop_points=q.max_drop,
            float_layers=list(qdet.qm.skipped),
            quantized_layers=sum(1 for layer in qdet.qm.layers.values() if layer.enabled),
        )
        ctx.reporter.info(
            f"quantize: mAP@[.5:.95] FP32 {fp32_map:.4f}, INT8 {int8_map:.4f} ({-metrics['drop_points']:+.2f} "
            f"points; PTQ alone {ptq_map:.4f})"
        )
        qdet = qdet.cpu().eval()
        atomic_write_json(ctx.dir / "calibration.json", {**calibration, **qdet.qm.scale_table()})
        summary = {k: v for k, v in metrics.items() if k != "qat_history"}
        save_detector_int8(
            ctx.dir / "student_int8.pt",
            qdet,
            arch=saved["arch"],
            names=data.names,
            category_ids=data.category_ids,
            imgsz=imgsz,
            metrics=summary,
        )
        atomic_write_json(ctx.dir / "metrics.json", {**metrics, "sensitivity": sensitivity})
        return StageResult(metrics={k: v for k, v in summary.items() if k != "mixed_precision"})

    @staticmethod
    def _sensitivity(ctx: StageContext, qdet: QuantizedDetector, data, imgsz: int) -> dict[str, Any]:
        cfg, d = ctx.config, ctx.config.detect
        split = data.val.subset(min(cfg.quantize.sensitivity_samples, len(data.val)))
        batches = [b.images for b in iterate_batches(split, imgsz, d.batch_size, train=False)]
        skipped = list(qdet.qm.skipped)
        qdet.qm.enable_only(None)
        reference = [_flat(qdet(x)) for x in batches] if batches else []
        qdet.qm.set_skipped(skipped)
        qdet.eval()
        result = layer_sensitivity(qdet.qm, lambda: -output_distortion(qdet, batches, reference), samples=len(split))
        result["measure"] = "output noise-to-signal ratio ||y_q - y||^2 / ||y||^2 with only that layer quantized"
        top = list(result["layers"].items())[:3]
        ctx.reporter.info(
            "quantize: most sensitive layers "
            + ", ".join(f"{n} ({v:.2e})" for n, v in top)
            + f" (output noise-to-signal, {len(split)} validation images)"
        )
        return result

    @staticmethod
    def _qat(ctx: StageContext, qdet, fp32, data, metrics: dict[str, Any], ptq_map: float, val_map, imgsz: int) -> None:
        cfg, q, d = ctx.config, ctx.config.quantize, ctx.config.detect
        epochs = q.epochs if q.epochs is not None else max(1, round(0.1 * cfg.distill.epochs))
        lr = q.lr if q.lr is not None else 0.01 * d.lr
        teacher = fp32
        if q.teacher == "teacher":
            teacher, _ = teacher_detector(ctx.run, cfg, data)
        ctx.reporter.info(
            f"quantize: QAT-KD (quantization mimic) {epochs} epoch(s) at lr {lr:g}, teacher: the FP32 "
            f"{'teacher' if q.teacher == 'teacher' else 'student'}"
        )
        ptq_state = copy.deepcopy(qdet.qm.state_dict())
        try:
            result = qat_kd(
                qdet,
                teacher,
                data,
                epochs=epochs,
                lr=lr,
                batch_size=d.batch_size,
                imgsz=imgsz,
                seed=cfg.seed,
                hflip=hflip_for(cfg.data.source),
                log=lambda line: ctx.reporter.info(f"quantize: QAT {line}"),
            )
        except EdgekdError as err:
            raise EdgekdError(
                f"{err}; or use the FP32 student as the QAT teacher (quantize.teacher: student)"
            ) from None
        qat_map = val_map()
        metrics.update(qat_epochs=epochs, qat_lr=lr, qat_teacher=q.teacher, qat_val_map50_95=qat_map)
        metrics["qat_history"] = result["epochs"]
        if qat_map < ptq_map:
            qdet.qm.load_state_dict(ptq_state)
            metrics["selected"] = "ptq"
            ctx.reporter.warn(
                f"quantize: QAT ended at mAP {qat_map:.4f}, below calibration alone ({ptq_map:.4f}); "
                "keeping the calibrated (PTQ) weights"
            )
        else:
            metrics["selected"] = "qat"


def export_int8_detector(ctx: StageContext, data, nms: dict | None, parity: dict[str, Any]) -> dict[str, Any]:
    """Write ``model_int8.onnx`` (TensorRT) and ``model_int8_cpu.onnx`` (ONNX Runtime) with NMS (``nms``
    None: the raw head, ``--nms none``) when the quantize stage made an INT8 detector; check the
    TensorRT rules and both flavours' mAP against the fake-quant model's (``detect.parity_max_map_diff``);
    ``{"int8": False}`` when it did not."""
    from edgekd.runtimes.onnxruntime.int8_encoding import host_isa
    from edgekd.targets import load_target
    from edgekd.tasks.detect.export import OnnxDetector
    from edgekd.tasks.detect.quantize import export_detector_int8

    cfg, d = ctx.config, ctx.config.detect
    int8_file = ctx.upstream("quantize") / "student_int8.pt"
    if not int8_file.is_file():
        return {"int8": False}
    qdet, saved = load_detector_int8(int8_file)
    fake_map = saved["metrics"]["val_map50_95"]
    profile = load_target(cfg.target)
    trt_path, cpu_path = ctx.dir / "model_int8.onnx", ctx.dir / "model_int8_cpu.onnx"
    info = export_detector_int8(
        qdet,
        trt_path,
        cpu_path,
        imgsz=int(saved["imgsz"]),
        nms=nms,
        opset=max(13, cfg.export.opset),
        cpu_isa=profile.cpu_flavour_isa(),
    )
    threads = cfg.bench.threads or 1
    for key, path in (("student_int8_cpu", cpu_path), ("student_int8_trt", trt_path)):
        runner = OnnxDetector(path, threads=threads, nms=nms_thresholds(d))
        m = evaluate_map(None, data, cfg, runner=runner, imgsz=int(saved["imgsz"]))
        diff = abs(m["map50_95"] - fake_map)
        parity[key] = {
            "head": d.nms,
            "samples": len(data.val),
            "map50_95_fake_quant": fake_map,
            "map50_95_onnx": m["map50_95"],
            "map50_onnx": m["map50"],
            "map_diff": diff,
            "max_map_diff": d.parity_max_map_diff,
            "passed": diff <= d.parity_max_map_diff,
        }
    encoding = info["cpu_encoding"]
    atomic_write_json(ctx.dir / "int8.json", {**info, "host_isa": host_isa()})
    rules = info["trt_rules"]
    ctx.reporter.info(
        f"export: INT8 TensorRT flavour ({rules['quantized_layers']} quantized layers, TensorRT rules passed) "
        f"and CPU flavour ({encoding['name'].upper()}); mAP@[.5:.95] ONNX Runtime "
        f"{parity['student_int8_cpu']['map50_95_onnx']:.4f} (cpu), {parity['student_int8_trt']['map50_95_onnx']:.4f} "
        f"(TensorRT flavour) vs fake quant {fake_map:.4f}"
    )
    for key in ("student_int8_cpu", "student_int8_trt"):
        if not parity[key]["passed"]:
            atomic_write_json(ctx.dir / "parity.json", parity)
            raise CheckFailed(
                f"INT8 ONNX parity failed ({key}): mAP differs from the fake-quant model by "
                f"{parity[key]['map_diff']:.4f} "
                f"(allowed {d.parity_max_map_diff:g}); see {ctx.dir / 'parity.json'}; to accept it, raise "
                "detect.parity_max_map_diff"
            )
    return {
        "int8": True,
        "int8_cpu_map50_95": parity["student_int8_cpu"]["map50_95_onnx"],
        "int8_trt_map50_95": parity["student_int8_trt"]["map50_95_onnx"],
        "int8_cpu_encoding": encoding["name"],
        "trt_rules_passed": rules["passed"],
        "float_layers": list(qdet.qm.skipped),
        "fp16_layers": len(info["fp16_layers"]),
    }
