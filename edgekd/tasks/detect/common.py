"""What the detection stages share: the run's dataset and teacher (loaded once per process), and the
validation mAP of a model or of its ONNX."""

from __future__ import annotations

from typing import Any

from edgekd.stages.common import teacher_path
from edgekd.tasks.detect.checkpoint import load_detector
from edgekd.tasks.detect.data import load_detection_data
from edgekd.tasks.detect.dataset import DetectionData
from edgekd.tasks.detect.metrics import coco_map
from edgekd.tasks.detect.predict import predict_split


def detection_data(ctx_or_run, config) -> DetectionData:
    run = getattr(ctx_or_run, "run", ctx_or_run)

    def load() -> DetectionData:
        data = load_detection_data(config.data.source, layout=config.detect.layout, seed=config.seed, log=None)
        n = config.data.max_train_samples
        if n is not None and n < len(data.train):  # a quick look: the first n training images
            data.train = data.train.subset(n)
        return data

    return run.memo("detect_data", load)


def teacher_detector(run, config, data: DetectionData):
    arch = config.teacher.arch if isinstance(config.teacher.arch, str) else None
    return run.memo(
        "detect_teacher",
        lambda: load_detector(
            teacher_path(config),
            arch=arch,
            num_classes=data.num_classes,
            imgsz=config.detect.imgsz,
            trust=config.teacher.trust_checkpoint,
        ),
    )


def evaluate_map(model, data: DetectionData, config, runner=None, imgsz: int | None = None) -> dict[str, Any]:
    """COCO mAP (pycocotools) of ``model`` (or an ONNX ``runner``) on the validation split, at ``imgsz``
    (the student's own input side; default ``detect.imgsz``, the teacher's)."""
    d = config.detect
    preds = predict_split(
        model,
        data.val,
        imgsz or d.imgsz,
        batch_size=d.batch_size,
        conf=d.conf,
        iou=d.iou,
        max_det=d.max_det,
        runner=runner,
    )
    m = coco_map(preds, data.val, data.names, data.category_ids)
    return {"map50_95": m["mAP"], "map50": m["mAP50"], "per_class": m["per_class"], "pr50": m["pr50"], "preds": preds}


def nms_thresholds(d) -> dict[str, Any]:
    """The NMS thresholds of the ``detect`` config: inside the ONNX, or on the host for a raw head."""
    return {"conf": d.conf, "iou": d.iou, "max_det": d.max_det}


def student_pick(config, run) -> tuple[str, int]:
    """The student's detector name and input side: ``--student`` at ``detect.imgsz``; else the search's
    pick (``search/best_arch.json``) when it ran; else ``detect.student`` at ``detect.imgsz``."""
    from edgekd.stages.common import searched_arch

    arch, d = config.student.arch, config.detect
    if isinstance(arch, str) and arch != "auto":
        return arch, d.imgsz
    found = searched_arch(run) if arch == "auto" else None
    if found is not None:
        return str(found["name"]), int(found.get("imgsz", d.imgsz))
    return d.student, d.imgsz


def student_imgsz(ctx, config) -> int:
    """The input side of the distilled student (its checkpoint's; the bench and the bundle use it)."""
    return int(ctx.upstream_metrics("distill").get("imgsz", config.detect.imgsz))


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def hflip_for(source) -> float:
    """The horizontal-flip probability for a dataset: none for digits-detect (a mirrored digit is another
    digit, or none), else 0.5."""
    return 0.0 if str(source) == "digits-detect" else 0.5
