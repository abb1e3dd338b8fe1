"""Offline distillation (the default): a frozen, pretrained teacher; CE + the configured methods."""

from __future__ import annotations

from edgekd.distill.schemes.base import Scheme, SchemeJob, SchemeOutcome, methods_of, register_scheme, train_with


@register_scheme("offline")
class Offline(Scheme):
    def run(self, job: SchemeJob) -> SchemeOutcome:
        student = job.new_student()
        result = train_with(job, student, job.distill, methods_of(job), teacher_fn=job.teacher_fn)
        return SchemeOutcome(student, result)
