"""Tasks: what differs between classification and detection, one module or folder each (base.py says what).

    classify.py    the zoo's classifiers, cross-entropy, top-1 (the stages of edgekd/stages/)
    detect/        detection: data, edge detectors, detection KD, COCO mAP, ONNX with NMS, and the
                   stages that differ for it (detect/stages.py)

``TASKS`` is the one table of tasks; ``resolve_task`` turns ``task: auto`` into a task from the data
or the teacher, with a one-line error where the two disagree.
"""

from __future__ import annotations

from edgekd.errors import EdgekdError
from edgekd.tasks.base import Metric, Task
from edgekd.tasks.classify import CLASSIFY
from edgekd.tasks.detect.task import DETECT

TASKS: dict[str, Task] = {task.name: task for task in (CLASSIFY, DETECT)}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise EdgekdError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]


def resolve_task(config):
    """``config`` with ``task`` decided: as given, else from the data, else from the teacher's arch."""
    arch = config.teacher.arch if isinstance(config.teacher.arch, str) else None
    by_data = [t.name for t in TASKS.values() if t.matches_data(config.data.source)]
    by_arch = [t.name for t in TASKS.values() if arch and t.matches_teacher_arch(arch)]
    if config.task != "auto":
        chosen = config.task
        clash = [n for n in by_data + by_arch if n != chosen]
        if clash:
            raise EdgekdError(
                f"--task {chosen} does not fit the data or teacher, which are {clash[0]}'s; "
                f"pass --task {clash[0]} or other data"
            )
    else:
        found = set(by_data + by_arch)
        if len(found) > 1:
            raise EdgekdError(f"the data says {by_data[0]} and the teacher {by_arch[0]}; pass --task to choose")
        chosen = found.pop() if found else "classify"
    out = config.model_copy(deep=True)
    out.task = chosen
    return out


__all__ = ["TASKS", "Metric", "Task", "get_task", "resolve_task"]
