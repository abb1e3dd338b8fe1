"""Stage ``export``: FP32 ONNX of the student (and of the teacher), checked and parity-tested.

``export/model_fp32.onnx`` has a dynamic batch axis and passes ``onnx.checker`` (full check).
ONNX Runtime is compared with PyTorch on ``export.parity_samples`` real validation images
(``export/parity.json``); the stage fails when the largest logit difference or the top-1
agreement is outside the configured tolerance. The teacher is exported too
(``teacher_fp32.onnx``) so the bench compares like with like; a teacher that cannot be exported
is recorded with its reason and does not fail the stage.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from edgekd.data import BatchIterator
from edgekd.errors import EdgekdError
from edgekd.export import check_parity, export_onnx
from edgekd.io import atomic_write_json
from edgekd.models.checkpoint import exportable_module, load_model_file
from edgekd.pipeline import CheckFailed, Stage, StageContext, StageResult, register_stage
from edgekd.stages.common import checked_teacher, normalization_from_teacher_json


@register_stage
class ExportStage(Stage):
    name = "export"
    config_keys = ("export", "data", "seed")
    needs = ("teacher", "distill")

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
        atomic_write_json(ctx.dir / "parity.json", {k: _finite(v) for k, v in parity.items()})
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
