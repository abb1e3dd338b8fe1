"""Stage ``quantize``: the FP32 student becomes an INT8 (fake-quant) student with (almost) no loss.

Steps: fold BN and insert fake quantizers (edgekd/quant/graph.py); calibrate the activation
ranges on ``quantize.calib_batches`` training batches (``calibrator: auto``, the default, computes
max, percentile, entropy and mse from one pass and keeps the best top-1 on the
``sensitivity_samples`` validation images); measure each layer's sensitivity; in ``qat``
mode fine-tune with the FP32 student (or, with ``quantize.teacher: teacher``, the original
teacher) as the KD teacher through the project's trainer (per-epoch checkpoint, resumable), and
keep the QAT weights only if they beat calibration alone on the validation split (``selected`` in
the metrics says which won); then,
while the top-1 drop exceeds ``quantize.max_drop`` points, keep the most sensitive layers in float
(FP16 on TensorRT).

Writes ``quantize/student_int8.pt`` (edgekd/quant/checkpoint.py), ``quantize/calibration.json``
(every activation's amax and scale, every layer's weight scales) and ``quantize/metrics.json``
(all of the above, with the sensitivity table and the mixed-precision steps). In a data-free run
(``distill.scheme: data_free``) calibration and QAT use the distill stage's synthetic images. With
``quantize.enabled: false`` (``--no-quantize``) it only records ``mode: off`` so export writes FP32.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from edgekd.data import BatchIterator, Split, augment_kwargs
from edgekd.data.splits import subset_indices, take
from edgekd.distill.trainer import evaluate, resolve_device
from edgekd.io import atomic_write_json
from edgekd.models.checkpoint import load_model_file
from edgekd.quant import prepare_int8
from edgekd.quant.checkpoint import save_int8
from edgekd.quant.qat import keep_better, qat_config, quantization_aware_kd
from edgekd.quant.sensitivity import layer_sensitivity, mixed_precision
from edgekd.stage import Stage, StageContext, StageResult
from edgekd.stages.common import checked_teacher, normalization_from_teacher_json


def quantize_training_split(ctx: StageContext, data) -> tuple[Split, str]:
    """The images to calibrate and fine-tune on: the training split, or in a data-free run the
    distill stage's synthetic images (so that no real training image is read there either)."""
    synthetic = ctx.upstream("distill") / "synthetic.npz"
    if ctx.config.distill.scheme != "data_free" or not synthetic.is_file():
        return data.train, "training"
    with np.load(synthetic) as z:
        split = Split(images=torch.from_numpy(z["x"]), labels=torch.from_numpy(z["y"]).long())
    return split, "synthetic (data-free)"


def resolve_weight_bits(config) -> int:
    """``quantize.weight_bits``; ``auto`` is 7 for a CPU target whose CPU is x86 without VNNI (U8S8
    with 8-bit weights would saturate there, 7-bit weights keep the fast kernel exact:
    edgekd/runtimes/onnxruntime/int8_encoding.py), else 8."""
    bits = config.quantize.weight_bits
    if bits != "auto":
        return int(bits)
    from edgekd.targets import load_target

    target = load_target(config.target)
    isa, _ = target.cpu_flavour_isa()
    return 7 if target.kind == "cpu" and isa.startswith("x86-64") and isa != "x86-64-vnni" else 8


class QuantizeStage(Stage):
    name = "quantize"
    config_keys = ("quantize", "distill", "data", "seed", "device")
    needs = ("teacher", "distill")

    def external_inputs(self, config, run):
        """``weight_bits: auto`` depends on the target's CPU (and, for x86-cpu, this host's)."""
        return {"weight_bits": resolve_weight_bits(config)}

    def check(self, config, run):
        """The student can be traced and quantized (before anything runs)."""
        if not config.quantize.enabled:
            return
        from edgekd.models import create_model
        from edgekd.stages.common import checked_teacher_for, student_arch

        teacher, data = checked_teacher_for(run, config)
        arch = student_arch(config, teacher, data)
        prepare_int8(create_model(arch, num_classes=len(data.classes), in_channels=data.input_shape[0]))

    def run(self, ctx: StageContext) -> StageResult:
        q = ctx.config.quantize
        if not q.enabled:
            metrics = {"mode": "off", "reason": "quantize.enabled is false (--no-quantize)"}
            atomic_write_json(ctx.dir / "metrics.json", metrics)
            return StageResult(metrics=metrics)
        cfg = ctx.config
        teacher, data = checked_teacher(ctx)
        norm = normalization_from_teacher_json(ctx.upstream("teacher"))
        device = resolve_device(cfg.device)
        loaded = load_model_file(ctx.upstream("distill") / "student.pt")
        student = loaded.model.eval()
        qm = prepare_int8(student).to(device)
        qm.set_weight_bits(resolve_weight_bits(cfg))

        train_split, train_source = quantize_training_split(ctx, data)
        calib = BatchIterator(train_split, q.calib_batch_size, shuffle=True, seed=cfg.seed, normalization=norm)
        batches = [x.to(device) for _, (x, _y) in zip(range(q.calib_batches), calib, strict=False)]
        sens_split = take(data.val, subset_indices(data.val.labels, q.sensitivity_samples, cfg.seed))
        calibration = qm.calibrate(
            batches, q.calibrator, q.percentile, score=lambda: evaluate(qm, sens_split, norm, device)["top1"]
        )
        chosen = calibration["method"]
        how = (
            f"auto: {chosen}, best of "
            + ", ".join(f"{k} {100 * v:.2f}%" for k, v in calibration["auto_scores"].items())
            + f" on {len(sens_split)} validation images"
            if q.calibrator == "auto"
            else chosen
        )
        ctx.reporter.info(
            f"quantize: {len(qm.layers)} layers, {len(qm.points)} activations, calibrated ({how}) "
            f"on {calibration['images']} {train_source} images"
        )
        student = student.to(device)
        fp32_top1 = evaluate(student, data.val, norm, device)["top1"]
        ptq_top1 = evaluate(qm, data.val, norm, device)["top1"]
        metrics: dict[str, Any] = {
            "mode": q.mode,
            "calibrator": chosen,
            "weight_bits": qm.weight_bits,
            "calibrator_setting": q.calibrator,
            "calibrator_scores": calibration.get("auto_scores"),
            "calibration_images": calibration["images"],
            "calibration_source": train_source,
            "fp32_val_top1": fp32_top1,
            "ptq_val_top1": ptq_top1,
            "layers": len(qm.layers),
            "activation_points": len(qm.points),
        }
        sensitivity = None
        if q.sensitivity or q.max_drop is not None:
            sensitivity = layer_sensitivity(
                qm, lambda: evaluate(qm, sens_split, norm, device)["top1"], samples=len(sens_split)
            )
            top = next(iter(sensitivity["layers"].items()))
            ctx.reporter.info(f"quantize: most sensitive layer {top[0]} (top-1 -{100 * top[1]:.2f} points alone)")

        if q.mode == "qat":
            qcfg = qat_config(
                cfg.distill,
                epochs=q.epochs,
                lr=q.lr,
                ce_weight=q.ce_weight,
                kd_weight=q.kd_weight,
                temperature=q.temperature,
                feature_method=q.feature_method,
                feature_weight=q.feature_weight,
            )
            kd_teacher = teacher.model if q.teacher == "teacher" else copy.deepcopy(student)
            ptq_state = copy.deepcopy(qm.state_dict())
            ctx.reporter.info(
                f"quantize: QAT-KD {qcfg.epochs} epoch(s) at lr {qcfg.lr:g}, teacher: the FP32 "
                f"{'teacher' if q.teacher == 'teacher' else 'student'}"
                + (f", with {q.feature_method} feature KD" if q.feature_method else "")
            )
            result = quantization_aware_kd(
                qm,
                kd_teacher,
                train_split=train_split,
                val_split=data.val,
                normalization=norm,
                config=qcfg,
                seed=cfg.seed,
                device=device,
                augment=augment_kwargs(cfg.data.augment, data.input_shape),
                num_workers=cfg.data.num_workers,
                checkpoint_path=ctx.dir / "last.ckpt",
                resume=ctx.resume,
                reporter=ctx.reporter,
                fp32_model=student,
                teacher_label=q.teacher,
            )
            metrics.update(
                qat_epochs=qcfg.epochs,
                qat_lr=qcfg.lr,
                qat_teacher=q.teacher,
                qat_methods=[m.model_dump() for m in qcfg.methods],
                qat_seconds=result["seconds"],
                qat_history=result["history"],
            )
            qat_top1 = evaluate(qm, data.val, norm, device)["top1"]
            metrics["qat_val_top1"] = qat_top1
            metrics["selected"] = keep_better(qm, ptq_state, ptq_top1, qat_top1)
            if metrics["selected"] == "ptq":
                ctx.reporter.warn(
                    f"quantize: QAT ended at {100 * qat_top1:.2f}% top-1, below calibration alone "
                    f"({100 * ptq_top1:.2f}%); keeping the calibrated (PTQ) weights"
                )
        else:
            metrics["selected"] = "ptq"
        int8_top1 = evaluate(qm, data.val, norm, device)["top1"]
        if q.max_drop is not None and sensitivity is not None and 100 * (fp32_top1 - int8_top1) > q.max_drop:
            mp = mixed_precision(
                qm,
                lambda: evaluate(qm, data.val, norm, device)["top1"],
                fp32=fp32_top1,
                order=list(sensitivity["layers"]),
                max_drop=q.max_drop / 100,
            )
            metrics["mixed_precision"] = mp
            int8_top1 = mp["score"]
            ctx.reporter.info(f"quantize: kept {len(mp['skipped'])} layer(s) in float to stay within --max-drop")
        metrics.update(
            val_top1=int8_top1,
            drop_points=100 * (fp32_top1 - int8_top1),
            max_drop_points=q.max_drop,
            float_layers=list(qm.skipped),
            quantized_layers=sum(1 for layer in qm.layers.values() if layer.enabled),
        )
        ctx.reporter.info(
            f"quantize: top-1 FP32 {100 * fp32_top1:.2f}%, INT8 {100 * int8_top1:.2f}% "
            f"({-metrics['drop_points']:+.2f} points; PTQ alone {100 * ptq_top1:.2f}%)"
        )
        qm = qm.cpu().eval()
        atomic_write_json(ctx.dir / "calibration.json", {**calibration, **qm.scale_table()})
        summary = {k: v for k, v in metrics.items() if k != "qat_history"}
        save_int8(
            ctx.dir / "student_int8.pt",
            qm,
            arch=loaded.arch or {},
            input_spec=loaded.input,
            classes=loaded.classes or data.classes,
            metrics=summary,
        )
        atomic_write_json(ctx.dir / "metrics.json", {**metrics, "sensitivity": sensitivity})
        return StageResult(metrics={k: v for k, v in summary.items() if k != "mixed_precision"})
