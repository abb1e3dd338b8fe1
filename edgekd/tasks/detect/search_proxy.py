"""The detector search's cost and proxy: a candidate's modelled latency, and a short KD training.

Cost: parameters, FLOPs and the batch-1 latency of the candidate at its own input side on the
run's target, from the latency model (``edgekd.nas.cost.model_cost``: the calibration table where
``edgekd profile`` made one, else the roofline; modelled, not measured). The search rejects a
candidate over the budget before it trains.

Proxy: every candidate trains the same way, from the same seed, on the first
``search.proxy_train_samples`` training images for ``search.proxy_epochs`` epochs at its own
input side, with the detector's own loss plus the KD terms of ``detect.search.proxy_kd`` that apply
to the (teacher, candidate) pair (default PKD feature imitation, Cao et al. 2022, and dense class
KD; ``pseudo_label`` when neither applies). Two scores come out:

- ``proxy_map50_95``: COCO mAP@[.5:.95] (pycocotools) on the first ``search.proxy_val_samples``
  validation images, at the candidate's side: the search ranks by it;
- ``proxy_imitation``: the PKD term's mean over the last training epoch (lower: the candidate
  imitates the teacher's features better), recorded for comparison (benchmarks/detect_search.py
  measures how well each ranks candidates by their longer-budget mAP).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from edgekd.nas.cost import Cost, model_cost
from edgekd.tasks.detect.dataset import DetectionData
from edgekd.tasks.detect.kd import applicable
from edgekd.tasks.detect.metrics import coco_map
from edgekd.tasks.detect.models import build_detector
from edgekd.tasks.detect.predict import predict_split
from edgekd.tasks.detect.train import train_detector


def detector_cost(name: str, imgsz: int, num_classes: int, target: str, precision: str) -> Cost:
    """Parameters, FLOPs and modelled batch-1 latency of the detector ``name`` at ``imgsz`` on ``target``."""
    return model_cost(build_detector(name, num_classes, imgsz), target, (3, imgsz, imgsz), precision)


def proxy_kd(wanted: dict[str, float], teacher: nn.Module, student: nn.Module, imgsz: int) -> dict[str, float]:
    """The terms of ``wanted`` that apply to the pair (positive weights); pseudo-labels when none does."""
    kd = {m: w for m, w in wanted.items() if w > 0 and applicable(m, teacher, student, imgsz) is None}
    return kd or {"pseudo_label": 1.0}


@dataclass
class DetectProxy:
    """Everything a proxy training needs, built once per search."""

    teacher: nn.Module
    data: DetectionData  # already cut to the proxy's training and validation images
    kd: dict[str, float]
    epochs: int
    batch_size: int
    lr: float
    seed: int
    hflip: float = 0.0
    eval_kwargs: dict[str, Any] = field(default_factory=dict)  # conf, iou, max_det of the mAP

    @classmethod
    def build(cls, teacher: nn.Module, data: DetectionData, config, hflip: float) -> DetectProxy:
        """From the run's config: ``search.proxy_*`` for the budget, ``detect.*`` for lr and NMS."""
        s, d = config.search, config.detect
        sub = replace(
            data,
            train=data.train.subset(s.proxy_train_samples or len(data.train)),
            val=data.val.subset(s.proxy_val_samples or len(data.val)),
        )
        return cls(
            teacher,
            sub,
            dict(d.search.proxy_kd),
            s.proxy_epochs,
            s.proxy_batch_size,
            d.lr,
            config.seed,
            hflip,
            {"conf": d.conf, "iou": d.iou, "max_det": d.max_det},
        )

    def describe(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "train_samples": len(self.data.train),
            "val_samples": len(self.data.val),
            "batch_size": self.batch_size,
            "lr": self.lr,
            "kd": self.kd,
            "score": "mAP@[.5:.95] (pycocotools) on the validation subset after the last epoch",
            "imitation": "PKD term, mean over the last training epoch",
        }

    def val_metrics(self, model: nn.Module, imgsz: int) -> dict[str, Any]:
        """COCO metrics (``mAP``, ``mAP50``, ...) of ``model`` on the validation subset at ``imgsz``."""
        preds = predict_split(model, self.data.val, imgsz, batch_size=self.batch_size, **self.eval_kwargs)
        return coco_map(preds, self.data.val, self.data.names, self.data.category_ids)

    def val_map(self, model: nn.Module, imgsz: int) -> float:
        return float(self.val_metrics(model, imgsz)["mAP"])

    def train(self, spec: dict[str, Any], epochs: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
        """Train ``spec`` (``{"name", "imgsz"}``) from scratch with KD from the teacher."""
        imgsz = int(spec["imgsz"])
        torch.manual_seed(self.seed)
        student = build_detector(spec["name"], self.data.num_classes, imgsz)
        kd = proxy_kd(self.kd, self.teacher, student, imgsz)
        history = train_detector(
            student,
            self.data,
            teacher=self.teacher,
            kd=kd,
            epochs=epochs or self.epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            imgsz=imgsz,
            seed=self.seed,
            hflip=self.hflip,
        )
        return student, {"kd": kd, "history": history["epochs"]}

    def score(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Proxy-train ``spec``; its mAP on the validation subset and its last-epoch imitation loss."""
        t0 = time.perf_counter()
        student, info = self.train(spec)
        last = info["history"][-1] if info["history"] else {}
        m = self.val_metrics(student, int(spec["imgsz"]))
        return {
            "proxy_map50_95": float(m["mAP"]),
            "proxy_map50": float(m["mAP50"]),
            "proxy_imitation": last.get("kd_pkd"),
            "proxy_kd": info["kd"],
            "train_seconds": round(time.perf_counter() - t0, 3),
        }
