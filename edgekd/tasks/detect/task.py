"""Detection as an edgekd task (edgekd/tasks/base.py): which data and teachers are detection's, the
models and KD methods it offers, and the stages that differ for it (stages.py)."""

from __future__ import annotations

from pathlib import Path

from edgekd.tasks.base import Metric, Task
from edgekd.tasks.detect.stages import STAGES


def matches_data(source: str) -> bool:
    """``digits-detect``, a YOLO ``data.yaml`` (or a folder with one), or a COCO folder."""
    if str(source) == "digits-detect":
        return True
    path = Path(str(source)).expanduser()
    if path.is_file():
        return path.suffix in (".yaml", ".yml")
    return path.is_dir() and ((path / "data.yaml").is_file() or any((path / "annotations").glob("instances_*.json")))


def matches_teacher_arch(arch: str) -> bool:
    from edgekd.tasks.detect.edge_detector import arch_from_name
    from edgekd.tasks.detect.models import DETECTOR_NAMES

    return arch in DETECTOR_NAMES or arch_from_name(arch) is not None


DETECT = Task(
    name="detect",
    description="object detection (COCO mAP)",
    metric=Metric(key="map50_95", label="mAP@[.5:.95]"),
    models_from="edgekd.tasks.detect.models:detector_names",
    kd_methods_from="edgekd.tasks.detect.kd:METHODS",
    matches_data=matches_data,
    matches_teacher_arch=matches_teacher_arch,
    stage_overrides=STAGES,
)
