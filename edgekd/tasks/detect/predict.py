"""Detections of any edgekd detector on a split, in the original images' pixels.

Edge detectors decode their dense maps and go through ``EfficientNMSOutputs`` (the very module
the ONNX export contains, so PyTorch and ONNX Runtime predictions can be compared box for box);
torchvision detectors use their own post-processing with the same thresholds.
"""

from __future__ import annotations

import torch
from torch import nn

from edgekd.tasks.detect.dataset import DetectionSplit
from edgekd.tasks.detect.decode import decode
from edgekd.tasks.detect.edge_detector import is_edge_detector
from edgekd.tasks.detect.nms import EfficientNMSOutputs
from edgekd.tasks.detect.transforms import iterate_batches, unletterbox

CONF, IOU, MAX_DET = 0.001, 0.6, 100  # evaluation defaults (COCO maxDets 100)


def padded_to_list(num_dets, det_boxes, det_scores, det_classes) -> list[dict[str, torch.Tensor]]:
    """EfficientNMS-style padded outputs -> per-image ``{"boxes", "scores", "labels"}``."""
    out = []
    for i in range(det_boxes.shape[0]):
        n = int(num_dets[i, 0])
        out.append(
            {
                "boxes": torch.as_tensor(det_boxes[i, :n]).float(),
                "scores": torch.as_tensor(det_scores[i, :n]).float(),
                "labels": torch.as_tensor(det_classes[i, :n]).long(),
            }
        )
    return out


@torch.no_grad()
def detect_batch(
    model: nn.Module, images: torch.Tensor, conf: float = CONF, iou: float = IOU, max_det: int = MAX_DET
) -> list[dict[str, torch.Tensor]]:
    """Detections for a batch of letterboxed images (boxes in the batch's pixels)."""
    if is_edge_detector(model):
        scores, boxes = decode(model(images), model.strides, model.reg_max)
        return padded_to_list(*EfficientNMSOutputs(max_det, iou, conf)(boxes, scores))
    return model.detect(images, conf, iou, max_det)


@torch.no_grad()
def predict_split(
    model: nn.Module,
    split: DetectionSplit,
    imgsz: int,
    batch_size: int = 16,
    conf: float = CONF,
    iou: float = IOU,
    max_det: int = MAX_DET,
    runner=None,
) -> list[dict[str, torch.Tensor]]:
    """Per-image detections on ``split`` in original pixels; ``runner(images)`` replaces the model (ONNX)."""
    was = model.training if model is not None else False
    if model is not None:
        model.eval()
    preds: list[dict[str, torch.Tensor]] = []
    for batch in iterate_batches(split, imgsz, batch_size, train=False):
        dets = runner(batch.images) if runner is not None else detect_batch(model, batch.images, conf, iou, max_det)
        for d, i, r in zip(dets, batch.indices, batch.scales, strict=True):
            preds.append({**d, "boxes": unletterbox(d["boxes"].clone(), r, split.sizes[i])})
    if model is not None:
        model.train(was)
    return preds
