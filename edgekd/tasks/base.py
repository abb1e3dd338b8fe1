"""What a task is: the things that differ between classification and detection, in one place per task.

    task          classify (edgekd/tasks/classify.py)        detect (edgekd/tasks/detect/)
    data          npz folders, ImageFolder, digits            COCO json, YOLO data.yaml, digits-detect
    models        the zoo (``edgekd models``)                 edet_* students, tv:<torchvision detector>
    loss          cross-entropy                               TAL assignment + QFL + GIoU + DFL
    KD methods    edgekd/distill/methods/                     edgekd/tasks/detect/kd/
    metric        top-1                                       COCO mAP@[.5:.95], mAP@.5 (pycocotools)
    export head   logits                                      decode + NMS (EfficientNMS outputs)
    bundle        class + probability                         boxes drawn + COCO-style JSON

A task hands the runner its stage implementations (``stage_overrides``): the stages of
``edgekd/stages/`` are the defaults (they are classification's), and a task replaces those that
differ for it. The pipeline, the run directory, the manifest, resume, the CLI and the report stay
task-agnostic: they ask the task, they never branch on its name. Adding a task is adding one module
or folder here and one entry in ``edgekd/tasks/__init__.py``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from edgekd.stage import Stage


@dataclass(frozen=True)
class Metric:
    """The task's headline metric: its key in metrics files, its label in tables, a fraction in [0, 1]."""

    key: str
    label: str


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    metric: Metric
    models_from: str  # "module:function" -> list[str]: the students (and edgekd-built teachers) of this task
    kd_methods_from: str  # "module:attribute", a function or a table: the distillation methods of this task
    matches_data: Any  # (data source) -> bool: the data is unambiguously this task's
    matches_teacher_arch: Any  # (arch name) -> bool: a teacher architecture of this task
    stage_overrides: dict[str, type[Stage]] = field(default_factory=dict)

    def model_names(self) -> list[str]:
        return list(_resolve(self.models_from)())

    def kd_methods(self) -> list[str]:
        found = _resolve(self.kd_methods_from)
        return list(found() if callable(found) else found)


def _resolve(reference: str) -> Any:
    """``"package.module:name"`` -> the object (imported only when asked: detection imports torchvision)."""
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)
