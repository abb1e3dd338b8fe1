"""Stage ``teacher``: load the user's model file safely, check it fits the data, evaluate it.

Writes ``teacher/teacher.json``: what the teacher is (arch spec or file kind), the file's sha256,
classes, input spec with its normalisation, parameters, and validation accuracy.
"""

from __future__ import annotations

from edgekd.distill.trainer import evaluate, resolve_device
from edgekd.io import atomic_write_json, sha256_file
from edgekd.models import count_parameters
from edgekd.stage import Stage, StageContext, StageResult
from edgekd.stages.common import (
    checked_teacher,
    checked_teacher_for,
    input_spec,
    resolve_normalization,
    teacher_external_inputs,
    teacher_path,
)


class TeacherStage(Stage):
    name = "teacher"
    config_keys = ("data", "teacher", "seed", "device")

    def external_inputs(self, config, run):
        return teacher_external_inputs(config, run)

    def check(self, config, run):
        resolve_device(config.device)
        checked_teacher_for(run, config)

    def run(self, ctx: StageContext) -> StageResult:
        teacher, data = checked_teacher(ctx)
        path = teacher_path(ctx.config)
        norm, norm_source = resolve_normalization(ctx.config, teacher, data)
        device = resolve_device(ctx.config.device)
        ctx.reporter.info(
            f"teacher: {path.name} ({teacher.kind}), data {data.name}: "
            f"{len(data.train)} train / {len(data.val)} val images {tuple(data.input_shape)}, "
            f"{len(data.classes)} classes"
        )
        n_teacher = int(ctx.run.memo("teacher_checked", lambda: None) or len(data.classes))
        val_split = data.val
        if n_teacher < len(data.classes):  # scheme lifelong: the old model, judged on its old classes
            from edgekd.distill.schemes.lifelong import old_class_split

            val_split = old_class_split(data.val, n_teacher)
            ctx.reporter.info(f"teacher: predicts the first {n_teacher} of {len(data.classes)} classes (lifelong)")
        val = evaluate(teacher.model.to(device), val_split, norm, device)
        teacher.model.to("cpu")
        ctx.reporter.info(f"teacher: validation top-1 {100 * val['top1']:.2f}% on {val['samples']} images")
        info = {
            "checkpoint": str(path.resolve()),
            "sha256": sha256_file(path),
            "kind": teacher.kind,
            "arch": teacher.arch,
            "classes": list(data.classes),
            "input": {**input_spec(data, norm), "normalization_source": norm_source},
            "parameters": count_parameters(teacher.model),
            "val_top1": val["top1"],
            "val_samples": val["samples"],
            "data": {
                "name": data.name,
                "fingerprint": data.fingerprint,
                "train_samples": len(data.train),
                "val_samples": len(data.val),
                "val_source": data.val_source,
                "skipped_images": len(data.skipped),
            },
        }
        atomic_write_json(ctx.dir / "teacher.json", info)
        return StageResult(
            metrics={"val_top1": val["top1"], "val_samples": val["samples"], "parameters": info["parameters"]}
        )
