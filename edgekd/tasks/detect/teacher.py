"""``edgekd train-teacher --task detect``: train a detector on a dataset and save it in edgekd's format."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from edgekd.tasks.detect.checkpoint import save_detector
from edgekd.tasks.detect.common import hflip_for
from edgekd.tasks.detect.data import load_detection_data
from edgekd.tasks.detect.metrics import coco_map
from edgekd.tasks.detect.models import build_detector
from edgekd.tasks.detect.predict import predict_split
from edgekd.tasks.detect.train import train_detector


def train_teacher_file(
    arch: str,
    data: str,
    out: Path,
    *,
    epochs: int,
    lr: float,
    imgsz: int,
    batch_size: int,
    seed: int,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train ``arch`` on ``data`` and write ``out``; returns the validation mAP and where it went."""
    dataset = load_detection_data(data, seed=seed, log=log)
    torch.manual_seed(seed)
    model = build_detector(arch, dataset.num_classes, imgsz)
    if log:
        log(f"train-teacher: {arch} on {dataset.summary()}, {epochs} epochs at {imgsz}px")
    hflip = hflip_for(data)
    train_detector(
        model, dataset, epochs=epochs, lr=lr, batch_size=batch_size, imgsz=imgsz, seed=seed, hflip=hflip, log=log
    )
    m = coco_map(
        predict_split(model, dataset.val, imgsz, batch_size=batch_size),
        dataset.val,
        dataset.names,
        dataset.category_ids,
    )
    metrics = {"val_map50_95": m["mAP"], "val_map50": m["mAP50"], "epochs": epochs, "data": str(data)}
    save_detector(
        out, model, arch=arch, names=dataset.names, category_ids=dataset.category_ids, imgsz=imgsz, metrics=metrics
    )
    return {"checkpoint": str(out), "arch": arch, **metrics}
