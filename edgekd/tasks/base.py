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
    model_names: Any  # () -> list[str]: the students (and edgekd-built teachers) this task has
    kd_methods: Any  # () -> list[str]: the distillation methods that apply to this task
    matches_data: Any  # (data source) -> bool: the data is unambiguously this task's
    matches_teacher_arch: Any  # (arch name) -> bool: a teacher architecture of this task
    stage_overrides: dict[str, type[Stage]] = field(default_factory=dict)
