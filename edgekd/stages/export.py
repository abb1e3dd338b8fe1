"""Stage ``export``: FP32 ONNX of the student (and of the teacher), checked and parity-tested.

``export/model_fp32.onnx`` has a dynamic batch axis and passes ``onnx.checker`` (full check).
ONNX Runtime is compared with PyTorch on ``export.parity_samples`` real validation images
(``export/parity.json``); the stage fails when the largest logit difference or the top-1
agreement is outside the configured tolerance. The teacher is exported too
(``teacher_fp32.onnx``) so the bench compares like with like; a teacher that cannot be exported
is recorded with its reason and does not fail the stage.

INT8 (issue 5): when the quantize stage made ``quantize/student_int8.pt``, the stage also writes
``model_int8.onnx`` (TensorRT flavour, checked against TensorRT's explicit-quantization rules) and
``model_int8_cpu.onnx`` (ONNX Runtime CPU flavour, uint8 activations), both from the same scale
table (edgekd/export/int8_onnx.py), compares both with the PyTorch fake-quant model on the whole
validation split (``parity.json``: ``student_int8_cpu``, ``student_int8_trt``, ``int8_flavours``),
and writes ``build_engine.sh`` (the ``trtexec`` command for the target, with ``layer_report.py``
beside it) and, where TensorRT and a GPU are present, ``model.engine``. Layers the quantize stage
kept in float run in FP16 in the TensorRT flavour (Casts in the ONNX, for strongly typed builds)
unless the target's precision is fp32.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from edgekd.data import BatchIterator
from edgekd.errors import CheckFailed, EdgekdError
from edgekd.export import check_parity, export_onnx
from edgekd.io import atomic_write_json
from edgekd.models.checkpoint import exportable_module, load_model_file
from edgekd.stage import Stage, StageContext, StageResult
from edgekd.stages.common import checked_teacher, normalization_from_teacher_json


class ExportStage(Stage):
    name = "export"
    config_keys = ("export", "data", "seed", "quantize", "target")
    needs = ("teacher", "distill", "quantize")

    def run(self, ctx: StageContext) -> StageResult:
        cfg = ctx.config.export
        teacher, data = checked_teacher(ctx)
        norm = normalization_from_teacher_json(ctx.upstream("teacher"))
        student = load_model_file(ctx.upstream("distill") / "student.pt").model.eval()
        images = _parity_images(data, norm, cfg.parity_samples)
        shape = tuple(data.input_shape)

        path = export_onnx(student, ctx.dir / "model_fp32.onnx", input_shape=shape, opset=cfg.opset)
        parity: dict[str, Any] = {
            "student": check_parity(student, path, images, atol=cfg.parity_atol, min_agreement=cfg.parity_min_agreement)
        }
        if cfg.export_teacher:
            parity["teacher"] = self._export_teacher(ctx, teacher.model, images, shape)
        int8 = _export_int8(ctx, data, norm, shape, parity)  # issue 5: INT8 flavours + build_engine.sh
        atomic_write_json(ctx.dir / "parity.json", {k: _finite(v) for k, v in parity.items()})
        _check_int8_parity(ctx, parity)
        result = parity["student"]
        ctx.reporter.info(
            f"export: ONNX vs PyTorch on {result['samples']} images: max |diff| {result['max_abs_diff']:.2e}, "
            f"top-1 agreement {100 * result['top1_agreement']:.1f}%"
        )
        if not result["passed"]:
            raise CheckFailed(
                f"ONNX parity failed: max |logit diff| {result['max_abs_diff']:.3g} (allowed "
                f"{cfg.parity_atol:g}), top-1 agreement {result['top1_agreement']:.3f} (needed "
                f"{cfg.parity_min_agreement:g}); see {ctx.dir / 'parity.json'}"
            )
        return StageResult(
            metrics={
                "opset": cfg.opset,
                "parity_max_abs_diff": result["max_abs_diff"],
                "parity_top1_agreement": result["top1_agreement"],
                "teacher_exported": bool(parity.get("teacher", {}).get("passed")),
                **int8,
            }
        )

    def _export_teacher(self, ctx: StageContext, model, images: torch.Tensor, shape) -> dict[str, Any]:
        """Export the teacher so bench compares like with like; a teacher that cannot be exported,
        or whose ONNX disagrees with it, is left out of the bench with the reason recorded."""
        cfg = ctx.config.export
        path = ctx.dir / "teacher_fp32.onnx"
        try:
            export_onnx(exportable_module(model.eval()), path, input_shape=shape, opset=cfg.opset)
        except EdgekdError as exc:
            ctx.reporter.warn(f"export: the teacher was not exported to ONNX ({exc}); bench skips it")
            return {"exported": False, "reason": str(exc)}
        result = check_parity(model, path, images, atol=cfg.parity_atol, min_agreement=cfg.parity_min_agreement)
        if not result["passed"]:
            path.unlink()
            reason = result.get("error") or f"max |logit diff| {result['max_abs_diff']:.3g}"
            ctx.reporter.warn(f"export: the teacher's ONNX disagrees with PyTorch ({reason}); bench skips it")
            return {**result, "exported": False, "reason": reason}
        return {**result, "exported": True}


def _finite(record: dict[str, Any]) -> dict[str, Any]:
    """JSON has no Infinity: a difference that could not be computed is written as null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}


def _parity_images(data, norm, n: int) -> torch.Tensor:
    batches = []
    count = 0
    for x, _ in BatchIterator(data.val, min(n, 256), shuffle=False, seed=0, normalization=norm):
        batches.append(x)
        count += x.shape[0]
        if count >= n:
            break
    return torch.cat(batches)[:n]


# ---- INT8 (issue 5) ----------------------------------------------------------------------------
def _export_int8(ctx: StageContext, data, norm, shape, parity: dict[str, Any]) -> dict[str, Any]:
    """Write both INT8 flavours, check the TensorRT rules and parity, write build_engine.sh."""
    import numpy as np

    from edgekd.export.int8_onnx import export_int8
    from edgekd.export.trt_rules import assert_trt_rules
    from edgekd.quant.checkpoint import load_int8
    from edgekd.runtimes.onnxruntime.infer import run_onnx
    from edgekd.runtimes.onnxruntime.int8_encoding import host_isa, host_model_source
    from edgekd.runtimes.tensorrt.build import build_engine, build_engine_script, tensorrt_available
    from edgekd.targets import load_target

    profile = load_target(ctx.config.target)
    int8_file = ctx.upstream("quantize") / "student_int8.pt"
    fp16 = profile.precision != "fp32"
    if not int8_file.is_file():
        script = build_engine_script("model_fp32.onnx", profile, input_name="input", input_shape=shape, int8=False)
        _write_engine_script(ctx, script)
        return {"int8": False}
    qm, _ = load_int8(int8_file)
    opset = max(13, ctx.config.export.opset)
    trt_path, cpu_path = ctx.dir / "model_int8.onnx", ctx.dir / "model_int8_cpu.onnx"
    info = export_int8(
        qm, trt_path, cpu_path, input_shape=shape, opset=opset, fp16_fallback=fp16, cpu_isa=profile.cpu_flavour_isa()
    )
    rules = assert_trt_rules(trt_path)
    images = torch.cat([x for x, _ in BatchIterator(data.val, 256, shuffle=False, seed=0, normalization=norm)])
    q = ctx.config.quantize
    for key, path in (("student_int8_cpu", cpu_path), ("student_int8_trt", trt_path)):
        parity[key] = check_parity(qm, path, images, atol=float("inf"), min_agreement=q.parity_min_agreement)
    import onnxruntime as ort

    logits = [
        run_onnx(ort.InferenceSession(host_model_source(p), providers=["CPUExecutionProvider"]), images.numpy())
        for p in (cpu_path, trt_path)
    ]
    agreement = float(np.mean(logits[0].argmax(1) == logits[1].argmax(1)))
    parity["int8_flavours"] = {
        "samples": int(images.shape[0]),
        "top1_agreement": agreement,
        "min_agreement": q.flavour_min_agreement,
        "passed": agreement >= q.flavour_min_agreement,
    }
    script = build_engine_script("model_int8.onnx", profile, input_name="input", input_shape=shape, fp16=fp16)
    _write_engine_script(ctx, script)
    engine: dict[str, Any]
    ok, why = tensorrt_available()
    if ok:
        engine = build_engine(
            trt_path,
            ctx.dir / "model.engine",
            input_name="input",
            input_shape=shape,
            max_batch=profile.max_batch,
            fp16=fp16,
            timing_cache=ctx.dir / "model.timing.cache",
        )
    else:
        engine = {"built": False, "reason": why}
    encoding = info["cpu_encoding"]
    host = host_isa()
    parity["student_int8_cpu"]["encoding"] = encoding["name"]
    parity["student_int8_cpu"]["host_isa"] = host
    if host_model_source(cpu_path, host) != str(cpu_path):
        parity["student_int8_cpu"]["checked_as"] = "u8u8 (the same grid: U8S8 would saturate on this host's CPU)"
    atomic_write_json(ctx.dir / "int8.json", {**info, "host_isa": host, "trt_rules": rules, "engine": engine})
    ctx.reporter.info(
        f"export: INT8 TensorRT flavour ({rules['quantized_layers']} quantized layers, TensorRT rules passed) "
        f"and CPU flavour ({encoding['name'].upper()} for {encoding['isa_description']}, from "
        f"{encoding['isa_source']}); parity with fake quant "
        f"{100 * parity['student_int8_cpu']['top1_agreement']:.2f}% (cpu), "
        f"{100 * parity['student_int8_trt']['top1_agreement']:.2f}% (TensorRT), flavours agree {100 * agreement:.2f}%"
    )
    return {
        "int8": True,
        "int8_parity_cpu_top1_agreement": parity["student_int8_cpu"]["top1_agreement"],
        "int8_parity_trt_top1_agreement": parity["student_int8_trt"]["top1_agreement"],
        "int8_flavours_top1_agreement": agreement,
        "int8_cpu_encoding": encoding["name"],
        "int8_cpu_isa": encoding["isa"],
        "trt_rules_passed": rules["passed"],
        "float_layers": list(qm.skipped),
        "fp16_layers": len(info["fp16_layers"]),
        "engine_built": bool(engine.get("engine_bytes")),
    }


def _write_engine_script(ctx: StageContext, script: str) -> None:
    """build_engine.sh, and the layer_report.py it runs after the build (the bundle ships the same file)."""
    from importlib import resources

    from edgekd.io import atomic_write_bytes, atomic_write_text

    atomic_write_text(ctx.dir / "build_engine.sh", script)
    report = resources.files("edgekd.package").joinpath("templates", "layer_report.py").read_bytes()
    atomic_write_bytes(ctx.dir / "layer_report.py", report)
    for name in ("build_engine.sh", "layer_report.py"):
        (ctx.dir / name).chmod(0o755)


def _check_int8_parity(ctx: StageContext, parity: dict[str, Any]) -> None:
    """Fail the stage when a flavour disagrees; the message names the flavour and the setting that
    relaxes the check. The runner keeps the stage's files (``.export.partial/``) for inspection."""
    for key, what, setting in (
        ("student_int8_cpu", "the INT8 ONNX Runtime CPU flavour (model_int8_cpu.onnx)", "parity_min_agreement"),
        ("student_int8_trt", "the INT8 TensorRT flavour (model_int8.onnx)", "parity_min_agreement"),
        ("int8_flavours", "the INT8 TensorRT and CPU flavours", "flavour_min_agreement"),
    ):
        r = parity.get(key)
        if r is not None and not r["passed"]:
            against = "each other" if key == "int8_flavours" else "the PyTorch fake-quant model"
            encoding = f" (encoding {r['encoding']}, host {r['host_isa']})" if r.get("encoding") else ""
            raise CheckFailed(
                f"INT8 parity: {what}{encoding} agrees with {against} on {100 * r['top1_agreement']:.2f}% of "
                f"{r['samples']} validation images, needed {100 * r['min_agreement']:g}%; see "
                f"{ctx.dir / 'parity.json'}; to accept it, lower quantize.{setting} (--set quantize.{setting}=...)"
            )
