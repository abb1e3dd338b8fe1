"""Detector zoo: edgekd's ``edet_*`` students and any torchvision detector as ``tv:<name>``.

``build_detector(name, num_classes, imgsz)`` builds either with random weights: torchvision models
get ``weights=None, weights_backbone=None`` (nothing downloads) and ``num_classes`` from the data
(+1 for the background class of SSD and the R-CNNs, which the wrapper adds to and removes from the
labels). Every detector answers the same small interface used by training, KD and prediction:

- ``family`` / ``head``: what kind of head it has (KD methods check these; ``describe``);
- ``features(images) -> list[Tensor]`` and ``feature_strides(imgsz)``: the multi-level features;
- ``predict(images, conf, iou, max_det)`` (see ``edgekd.tasks.detect.predict``) for detections;
- in training mode, ``loss(images, targets)`` (torchvision's own losses for ``tv:``).

Images are float ``[B, 3, S, S]`` in [0, 1]; torchvision models normalise inside.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.tasks.detect.edge_detector import SIZES, EdgeDetector, arch_from_name, is_edge_detector

# torchvision builder -> (family, head kind, background class in the labels)
TV_DETECTORS: dict[str, tuple[str, str, bool]] = {
    "fcos_resnet50_fpn": ("fcos", "dense-anchor-free", False),
    "retinanet_resnet50_fpn": ("retinanet", "dense-anchor-based", False),
    "retinanet_resnet50_fpn_v2": ("retinanet", "dense-anchor-based", False),
    "ssd300_vgg16": ("ssd", "dense-anchor-based-softmax", True),
    "ssdlite320_mobilenet_v3_large": ("ssd", "dense-anchor-based-softmax", True),
    "fasterrcnn_resnet50_fpn": ("rcnn", "two-stage", True),
    "fasterrcnn_resnet50_fpn_v2": ("rcnn", "two-stage", True),
    "fasterrcnn_mobilenet_v3_large_fpn": ("rcnn", "two-stage", True),
    "fasterrcnn_mobilenet_v3_large_320_fpn": ("rcnn", "two-stage", True),
}
DETECTOR_NAMES = [*SIZES, *(f"tv:{n}" for n in TV_DETECTORS)]


class TorchvisionDetector(nn.Module):
    """A torchvision detector behind edgekd's detector interface (labels 0..C-1 in and out)."""

    def __init__(self, name: str, num_classes: int, imgsz: int):
        super().__init__()
        self.name, self.num_classes, self.imgsz = f"tv:{name}", num_classes, imgsz
        self.family, self.head_kind, background = TV_DETECTORS[name]
        self.offset = 1 if background else 0
        kwargs = {"weights": None, "weights_backbone": None, "num_classes": num_classes + self.offset}
        if self.family != "ssd":  # SSDs resize to their own fixed size; the others keep imgsz
            kwargs.update(min_size=imgsz, max_size=imgsz)
        self.model = getattr(torchvision.models.detection, name)(**kwargs)
        self._channels: list[int] | None = None

    def loss(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        tgts = [{"boxes": t["boxes"], "labels": t["labels"] + self.offset} for t in targets]
        terms = self.model(list(images), tgts)
        terms["total"] = sum(terms.values())
        return terms

    @torch.no_grad()
    def detect(self, images: torch.Tensor, conf: float, iou: float, max_det: int) -> list[dict[str, torch.Tensor]]:
        m = self.model
        if hasattr(m, "score_thresh"):
            m.score_thresh, m.nms_thresh, m.detections_per_img = conf, iou, max_det
        elif hasattr(m, "roi_heads"):
            m.roi_heads.score_thresh, m.roi_heads.nms_thresh, m.roi_heads.detections_per_img = conf, iou, max_det
        out = m(list(images))
        return [{"boxes": d["boxes"], "scores": d["scores"], "labels": d["labels"] - self.offset} for d in out]

    def transformed(self, images: torch.Tensor) -> torch.Tensor:
        """The batch as the model's backbone sees it (normalised; SSDs also resized)."""
        return self.model.transform(list(images))[0].tensors

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        return list(self.model.backbone(self.transformed(images)).values())

    def feature_strides(self, imgsz: int) -> list[int]:
        """Stride of each feature level relative to an ``imgsz`` input (probed once)."""
        with torch.no_grad():
            was = self.training
            self.eval()
            x = torch.zeros(1, 3, imgsz, imgsz)
            feats = self.features(x)
            self.train(was)
        self._channels = [f.shape[1] for f in feats]
        return [round(imgsz / f.shape[-1]) for f in feats]

    @property
    def feature_channels(self) -> list[int]:
        if self._channels is None:
            self.feature_strides(self.imgsz)
        return self._channels


def build_detector(name: str, num_classes: int, imgsz: int = 320) -> nn.Module:
    """``edet_p`` / ``edet_n`` / ``edet_s``, an ``edet_c..`` spec name from the search space, or
    ``tv:<torchvision detection builder>``, random weights."""
    if arch_from_name(name) is not None:
        return EdgeDetector(name, num_classes)
    if name.startswith("tv:") and name[3:] in TV_DETECTORS:
        return TorchvisionDetector(name[3:], num_classes, imgsz)
    raise EdgekdError(
        f"unknown detector {name!r}; choose one of {', '.join(DETECTOR_NAMES)} or a spec name such as "
        "edet_c16_w32-64-128-256_d1-2-2-1_n64_h64 (even widths, depths >= 1)"
    )


def describe(model: nn.Module) -> dict:
    """What KD needs to know about a detector: name, family, head kind, DFL bins, classes."""
    if is_edge_detector(model):
        return {
            "name": model.name,
            "family": "edet",
            "head": "dense-anchor-free-dfl",
            "reg_max": model.reg_max,
            "num_classes": model.num_classes,
            "strides": list(model.strides),
            "features": getattr(model, "has_features", True),
        }
    if hasattr(model, "head_kind"):  # a TorchvisionDetector, or one given as code (code_teacher.CodeDetector)
        return {
            "name": model.name,
            "family": model.family,
            "head": model.head_kind,
            "reg_max": None,
            "num_classes": model.num_classes,
            "strides": None,
            "features": getattr(model, "has_features", True),
        }
    raise EdgekdError(f"{type(model).__name__} is not an edgekd detector; build it with build_detector")


def detector_names() -> list[str]:
    return list(DETECTOR_NAMES)
