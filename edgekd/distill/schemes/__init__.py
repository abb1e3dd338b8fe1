"""Distillation schemes and the survey's algorithms, one file each, chosen by ``distill.scheme``.

A scheme turns a ``SchemeJob`` (teacher, data, student factory, settings) into a trained student.
Most schemes are the shared training loop (``edgekd.distill.trainer.train``) plus hooks:

| scheme          | what it adds                                                   | file              |
|-----------------|----------------------------------------------------------------|-------------------|
| ``offline``     | frozen pretrained teacher (the default)                        | offline.py        |
| ``dml``         | N peers learn from each other, no teacher (own loop)           | dml.py            |
| ``byot``        | auxiliary heads on the student's stages, removed before export | byot.py           |
| ``cskd``        | class-wise self-KD between same-class samples                  | cskd.py           |
| ``tfkd``        | teacher-free virtual-teacher regularisation                    | tfkd.py           |
| ``multi_teacher`` | several teachers' soft labels, average or confidence-weighted | multi_teacher.py  |
| ``data_free``   | DeepInversion synthesis from BatchNorm statistics, then KD     | data_free.py      |
| ``adversarial`` | a discriminator the student learns to fool                     | adversarial.py    |
| ``cross_modal`` | teacher and student see paired views of each sample            | cross_modal.py    |
| ``lifelong``    | the teacher grown to new classes, LwF keeps its old outputs    | lifelong.py       |

``distill.assistant`` (TAKD, assistant.py) chains teacher -> assistant -> student around any
teacher-based scheme.
"""

from __future__ import annotations

from edgekd.distill.schemes import (  # noqa: E402,F401,I001  (registration)
    adversarial,
    byot,
    cross_modal,
    cskd,
    data_free,
    dml,
    lifelong,
    multi_teacher,
    offline,
    tfkd,
)
from edgekd.distill.schemes.base import SchemeJob, SchemeOutcome, TrainHook, build_scheme, register_scheme, scheme_names

__all__ = ["SchemeJob", "SchemeOutcome", "TrainHook", "build_scheme", "register_scheme", "scheme_names"]
