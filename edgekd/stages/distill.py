"""Stage ``distill``: train the student from the teacher (CE + the configured KD methods).

Writes ``distill/student.pt`` (weights + arch spec + input spec), ``distill/last.ckpt`` (the
per-epoch checkpoint a cut-off run resumes from) and ``distill/metrics.json``. With
``distill.baseline`` it also trains the same student on cross-entropy alone
(``baseline.pt``), from the same initial weights and data order, so the report shows the KD gain.

Issue 3 additions: ``distill.scheme`` picks how the student is trained (edgekd/distill/schemes/);
``distill.assistant`` chains teacher -> assistant -> student (``assistant.pt``); the teacher
quality guard (edgekd/distill/guard.py) runs first for teacher-based schemes (the baseline is then
trained before the student and doubles as the guard's reference); ``distill.cache`` puts the
teacher output cache (edgekd/distill/cache.py) in front of the teacher.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from edgekd.config import DistillConfig
from edgekd.data import Normalization, augment_kwargs
from edgekd.distill import guard as teacher_guard
from edgekd.distill.methods import BindInfo, bind_methods, build_method
from edgekd.distill.schemes import SchemeJob, build_scheme
from edgekd.distill.trainer import TrainSetup, resolve_device, train
from edgekd.errors import EdgekdError
from edgekd.io import atomic_write_json
from edgekd.models import count_parameters, create_model
from edgekd.models.checkpoint import load_model_file, save_model
from edgekd.stage import Stage, StageContext, StageResult
from edgekd.stages.common import (
    checked_teacher,
    checked_teacher_for,
    input_spec,
    normalization_from_teacher_json,
    probe_logits,
    searched_arch_input,
    student_arch,
)


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
        methods = [build_method(m.name, m.params) for m in config.distill.methods]
        # The taps resolve and the connectors fit both models (bad module paths, unmatched map sizes).
        example = torch.zeros((2, *data.input_shape))
        for collector in bind_methods(methods, student, teacher.model, config.distill.taps, example, BindInfo(2)):
            if collector is not None:
                collector.close()
        self._check_scheme(config, data)

    def _check_scheme(self, config, data) -> None:
        from edgekd.distill.schemes.cross_modal import View

        d = config.distill
        build_scheme(d.scheme)
        if d.assistant is not None:
            create_model(d.assistant, num_classes=len(data.classes), in_channels=data.input_shape[0])
        if d.scheme == "multi_teacher":
            if not d.multi_teacher.checkpoints:
                raise EdgekdError(
                    "scheme multi_teacher needs more teachers; set distill.multi_teacher.checkpoints=[A.pt, B.pt]"
                )
            for c in d.multi_teacher.checkpoints:
                if not Path(c).expanduser().is_file():
                    raise EdgekdError(f"teacher {c} (distill.multi_teacher.checkpoints) does not exist; check the path")
        if d.scheme == "lifelong" and (d.assistant is not None or config.quantize.teacher == "teacher"):
            raise EdgekdError(
                "scheme lifelong: the old model predicts fewer classes, so it cannot teach an assistant or the "
                "INT8 copy; drop --assistant / --qat-teacher"
            )
        if d.scheme == "cross_modal":
            norm = Normalization(mean=[0.5] * data.input_shape[0], std=[0.25] * data.input_shape[0])
            View(d.cross_modal.teacher_view, norm)
            View(d.cross_modal.student_view, norm)

    def run(self, ctx: StageContext) -> StageResult:
        cfg = ctx.config
        teacher, data = checked_teacher(ctx)
        norm = normalization_from_teacher_json(ctx.upstream("teacher"))
        device = resolve_device(cfg.device)
        arch = student_arch(cfg, teacher, data, ctx.run)
        if cfg.distill.scheme == "lifelong":
            ctx.reporter.info("distill: scheme lifelong: the student is the teacher with its classifier grown")
        elif cfg.student.arch == "auto" and isinstance(arch, dict):
            ctx.reporter.info(
                f"distill: no --student given; using the searched student {arch['name']} (search/best_arch.json)"
            )
        elif cfg.student.arch == "auto":
            ctx.reporter.info(f"distill: no --student given; using {arch}, the usual student for this teacher")
        spec_in = input_spec(data, norm)

        def new_student():
            torch.manual_seed(cfg.seed)
            return create_model(arch, num_classes=len(data.classes), in_channels=data.input_shape[0])

        def setup(student, methods, config: DistillConfig, teacher_model=None) -> TrainSetup:
            return TrainSetup(
                student=student,
                train=data.train,
                val=data.val,
                normalization=norm,
                config=config,
                seed=cfg.seed,
                device=device,
                teacher=(teacher_model or teacher.model) if methods else None,
                methods=methods,
                augment=augment_kwargs(cfg.data.augment, data.input_shape),
                num_workers=cfg.data.num_workers,
            )

        student_path = ctx.dir / "student.pt"
        baseline_metrics: dict[str, Any] | None = None
        if ctx.resume and student_path.is_file():
            finished = load_model_file(student_path)
            kd_result: dict[str, Any] = finished.metrics
            student_spec = finished.arch
            ctx.reporter.info("distill: the distilled student was already finished; keeping it")
        else:
            dcfg, guard_record, baseline_metrics = self._guard(ctx, teacher, data, new_student, setup, spec_in)
            scheme = build_scheme(dcfg.scheme)
            job = SchemeJob(
                distill=dcfg,
                data=data,
                normalization=norm,
                device=device,
                seed=cfg.seed,
                new_student=new_student,
                make_setup=setup,
                teacher=teacher.model if scheme.uses_teacher else None,
                teacher_sha256=self._teacher_sha(ctx),
                out_dir=ctx.dir,
                resume=ctx.resume,
                reporter=ctx.reporter,
                augment=augment_kwargs(cfg.data.augment, data.input_shape),
            )
            extra: dict[str, Any] = {"scheme": dcfg.scheme}
            if guard_record is not None:
                extra["guard"] = guard_record
            cache = self._cache(job, scheme)
            job.teacher_fn = cache
            if dcfg.assistant is not None and scheme.uses_teacher:
                from edgekd.distill.schemes.assistant import train_assistant

                assistant, a_result = train_assistant(job, dcfg.assistant)
                save_model(
                    ctx.dir / "assistant.pt", assistant, input_spec=spec_in, classes=data.classes, metrics=a_result
                )
                extra["assistant"] = {
                    "arch": assistant.arch_spec,
                    "parameters": a_result["parameters"],
                    "val_top1": a_result["final"]["val_top1"],
                    "best_val_top1": a_result["best"]["val_top1"],
                }
                job.teacher, job.teacher_fn, job.teacher_sha256 = assistant, None, None
                job.make_setup = lambda st, ms, c: setup(st, ms, c, teacher_model=assistant)
            student0 = teacher.model if dcfg.scheme == "lifelong" else new_student()
            ctx.reporter.info(
                f"distill: {student0.arch_spec['name']} ({count_parameters(student0):,} parameters), scheme "
                + (
                    f"{dcfg.scheme} (no teacher), {dcfg.epochs} epochs"
                    if not scheme.uses_teacher
                    else f"{dcfg.scheme}, {' + '.join(f'{m.weight:g}*{m.name}' for m in dcfg.methods)} "
                    f"+ {dcfg.ce_weight:g}*ce, {dcfg.epochs} epochs"
                )
            )
            outcome = scheme.run(job)
            student, kd_result = outcome.student, outcome.result
            extra.update(outcome.metrics)
            if cache is not None:
                extra["cache"] = cache.stats()
            kd_result["parameters"] = count_parameters(student)
            kd_result["scheme_metrics"] = extra
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
            **kd_result.get("scheme_metrics", {}),
        }
        if cfg.distill.baseline:
            metrics.update(baseline_metrics or self._baseline(ctx, new_student, setup, spec_in, data.classes))
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

    # ---- issue 3: teacher quality guard, teacher output cache --------------------------------
    def _teacher_sha(self, ctx) -> str | None:
        import json

        info = json.loads((ctx.upstream("teacher") / "teacher.json").read_text())
        return info.get("sha256")

    def _guard(self, ctx, teacher, data, new_student, setup, spec_in):
        """Compare the teacher with the student alone; returns (settings, guard record, baseline metrics)."""
        import json

        cfg = ctx.config
        dcfg = cfg.distill
        scheme = build_scheme(dcfg.scheme)
        if dcfg.guard.mode == "off" or not scheme.uses_teacher or dcfg.scheme in ("data_free", "lifelong"):
            return dcfg, None, None
        info = json.loads((ctx.upstream("teacher") / "teacher.json").read_text())
        teacher_top1 = float(info["val_top1"])
        baseline_metrics = None
        saved = ctx.dir / "guard.json"
        if ctx.resume and saved.is_file() and not dcfg.baseline:  # a cut-off run: the probe already ran
            decision = teacher_guard.GuardDecision(**json.loads(saved.read_text()))
            ctx.reporter.info(f"distill: teacher guard (from the first attempt): {decision.verdict}")
            return (*self._guarded(decision, dcfg), None)
        if dcfg.baseline:
            baseline_metrics = self._baseline(ctx, new_student, setup, spec_in, data.classes)
            student_top1 = baseline_metrics["baseline_val_top1"]
            source = f"the --baseline run, {dcfg.epochs} epochs"
        else:
            epochs = teacher_guard.probe_epochs(dcfg)
            ctx.reporter.info(f"distill: teacher guard: a {epochs}-epoch probe of the student alone (CE)")
            probe_cfg = dcfg.model_copy(update={"ce_weight": 1.0, "methods": [], "epochs": epochs})
            result = train(setup(new_student(), [], probe_cfg), reporter=ctx.reporter, label="guard probe")
            student_top1 = result["final"]["val_top1"]
            source = f"a {epochs}-epoch probe"
        from edgekd.distill.methods import method_names

        decision = teacher_guard.decide(
            teacher_top1,
            student_top1,
            source,
            mode=dcfg.guard.mode,
            margin=dcfg.guard.margin,
            fallback=dcfg.guard.fallback,
            dkd_available="dkd" in method_names(),
        )
        (ctx.reporter.info if decision.clearly_better else ctx.reporter.warn)(
            f"distill: teacher guard: {decision.verdict}"
        )
        atomic_write_json(saved, decision.to_dict())
        return (*self._guarded(decision, dcfg), baseline_metrics)

    @staticmethod
    def _guarded(decision, dcfg):
        new_cfg = teacher_guard.apply(decision, dcfg)
        record = {**decision.to_dict(), "scheme_used": new_cfg.scheme, "ce_weight_used": new_cfg.ce_weight}
        record["methods_used"] = [m.model_dump() for m in new_cfg.methods] if new_cfg.scheme != "tfkd" else []
        return new_cfg, record

    def _cache(self, job: SchemeJob, scheme):
        """The teacher output cache, when enabled and valid for this run (else None, said once)."""
        from edgekd.distill.cache import CachedTeacher, cache_key

        c = job.distill.cache
        if not c.enabled:
            return None
        taps = {t for m in job.distill.methods for t in build_method(m.name, m.params).taps}
        reason = None
        if scheme.name not in ("offline", "adversarial"):
            reason = f"scheme {scheme.name} does not run the teacher on the stored inputs"
        elif scheme.name == "adversarial" and job.distill.adversarial.on == "embedding":
            reason = "the adversarial discriminator on embeddings needs the teacher's forward pass"
        elif taps - {"logits"}:
            reason = f"the methods need teacher features ({', '.join(sorted(taps - {'logits'}))}), not only logits"
        elif job.teacher_sha256 is None:
            reason = "the teacher file's sha256 is unknown"
        if reason:
            job.reporter.warn(f"distill: teacher cache not used: {reason}")
            return None

        def key(epoch: int) -> str:
            return cache_key(
                teacher_sha256=job.teacher_sha256,
                data_fingerprint=job.data.fingerprint,
                normalization=job.normalization,
                augment=job.augment,
                seed=job.seed,
                epoch=epoch,
            )

        return CachedTeacher(
            job.teacher.to(job.device).eval(),
            directory=c.dir,
            key_of_epoch=key,
            n_samples=len(job.data.train),
            num_classes=len(job.data.classes),
            top_k=c.top_k,
            dtype=c.dtype,
        )
