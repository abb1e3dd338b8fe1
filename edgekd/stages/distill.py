"""Stage ``distill``: train the student from the teacher (CE + the configured KD methods).

Writes ``distill/student.pt`` (weights + arch spec + input spec), ``distill/last.ckpt`` (the
per-epoch checkpoint a cut-off run resumes from) and ``distill/metrics.json``. With
``distill.baseline`` it also trains the same student on cross-entropy alone
(``baseline.pt``), from the same initial weights and data order, so the report shows the KD gain.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from edgekd.config import DistillConfig
from edgekd.data import augment_kwargs
from edgekd.distill.methods import build_method
from edgekd.distill.trainer import TrainSetup, resolve_device, train
from edgekd.io import atomic_write_json
from edgekd.models import count_parameters, create_model
from edgekd.models.checkpoint import load_model_file, save_model
from edgekd.pipeline import Stage, StageContext, StageResult, register_stage
from edgekd.stages.common import (
    checked_teacher,
    checked_teacher_for,
    input_spec,
    normalization_from_teacher_json,
    probe_logits,
    searched_arch_input,
    student_arch,
)


@register_stage
class DistillStage(Stage):
    name = "distill"
    config_keys = ("data", "student", "distill", "seed", "device")
    needs = ("teacher",)

    def external_inputs(self, config, run):
        """The searched student, when "auto" takes it from search/best_arch.json (its sha256)."""
        return searched_arch_input(config, run)

    def check(self, config, run):
        """The student builds and takes the data's images; the methods build."""
        teacher, data = checked_teacher_for(run, config)
        arch = student_arch(config, teacher, data, run)
        student = create_model(arch, num_classes=len(data.classes), in_channels=data.input_shape[0])
        probe_logits(
            student,
            data.input_shape,
            f"student {student.arch_spec['name']}",
            "choose a student that fits this input size (--student; `edgekd models` lists them)",
        )
        for m in config.distill.methods:
            build_method(m.name, m.params)

    def run(self, ctx: StageContext) -> StageResult:
        cfg = ctx.config
        teacher, data = checked_teacher(ctx)
        norm = normalization_from_teacher_json(ctx.upstream("teacher"))
        device = resolve_device(cfg.device)
        arch = student_arch(cfg, teacher, data, ctx.run)
        if cfg.student.arch == "auto" and isinstance(arch, dict):
            ctx.reporter.info(
                f"distill: no --student given; using the searched student {arch['name']} (search/best_arch.json)"
            )
        elif cfg.student.arch == "auto":
            ctx.reporter.info(f"distill: no --student given; using {arch}, the usual student for this teacher")
        spec_in = input_spec(data, norm)

        def new_student():
            torch.manual_seed(cfg.seed)
            return create_model(arch, num_classes=len(data.classes), in_channels=data.input_shape[0])

        def setup(student, methods, config: DistillConfig) -> TrainSetup:
            return TrainSetup(
                student=student,
                train=data.train,
                val=data.val,
                normalization=norm,
                config=config,
                seed=cfg.seed,
                device=device,
                teacher=teacher.model if methods else None,
                methods=methods,
                augment=augment_kwargs(cfg.data.augment, data.input_shape),
                num_workers=cfg.data.num_workers,
            )

        student_path = ctx.dir / "student.pt"
        if ctx.resume and student_path.is_file():
            finished = load_model_file(student_path)
            kd_result: dict[str, Any] = finished.metrics
            student_spec = finished.arch
            ctx.reporter.info("distill: the distilled student was already finished; keeping it")
        else:
            student = new_student()
            ctx.reporter.info(
                f"distill: {student.arch_spec['name']} ({count_parameters(student):,} parameters) from the "
                f"teacher with {' + '.join(f'{m.weight:g}*{m.name}' for m in cfg.distill.methods)} "
                f"+ {cfg.distill.ce_weight:g}*ce, {cfg.distill.epochs} epochs"
            )
            methods = [(build_method(m.name, m.params), m.weight) for m in cfg.distill.methods]
            kd_result = train(
                setup(student, methods, cfg.distill),
                checkpoint_path=ctx.dir / "last.ckpt",
                resume=ctx.resume,
                reporter=ctx.reporter,
                label="distill",
            )
            kd_result["parameters"] = count_parameters(student)
            student_spec = student.arch_spec
            save_model(student_path, student, input_spec=spec_in, classes=data.classes, metrics=kd_result)

        metrics: dict[str, Any] = {
            "student": student_spec,
            "parameters": kd_result["parameters"],
            "val_top1": kd_result["final"]["val_top1"],
            "best_val_top1": kd_result["best"]["val_top1"],
            "epochs": kd_result["epochs"],
            "seconds": kd_result["seconds"],
            "reported": "final epoch",
        }
        if cfg.distill.baseline:
            metrics.update(self._baseline(ctx, new_student, setup, spec_in, data.classes))
            metrics["kd_gain"] = metrics["val_top1"] - metrics["baseline_val_top1"]
        atomic_write_json(ctx.dir / "metrics.json", {**metrics, "history": kd_result["history"]})
        return StageResult(metrics=metrics)

    def _baseline(self, ctx, new_student, setup, spec_in, classes) -> dict[str, Any]:
        """Same student, same budget, same seed and data order, cross-entropy alone."""
        config = ctx.config.distill.model_copy(update={"ce_weight": 1.0, "methods": []})
        path: Path = ctx.dir / "baseline.pt"
        if ctx.resume and path.is_file():
            result = load_model_file(path).metrics
        else:
            ctx.reporter.info("distill: training the baseline (same student, no KD)")
            student = new_student()
            result = train(
                setup(student, [], config),
                checkpoint_path=ctx.dir / "baseline_last.ckpt",
                resume=ctx.resume,
                reporter=ctx.reporter,
                label="baseline",
            )
            save_model(path, student, input_spec=spec_in, classes=classes, metrics=result)
        return {
            "baseline_val_top1": result["final"]["val_top1"],
            "baseline_best_val_top1": result["best"]["val_top1"],
        }
