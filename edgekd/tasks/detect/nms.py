"""NMS with TensorRT's EfficientNMS output convention, one module for PyTorch and for ONNX.

``EfficientNMSOutputs`` turns per-location boxes ``[B, A, 4]`` and class scores ``[B, A, C]`` into
``num_dets`` int32 ``[B, 1]``, ``det_boxes`` float32 ``[B, K, 4]``, ``det_scores`` float32 ``[B, K]``
and ``det_classes`` int32 ``[B, K]`` (class-aware NMS, like EfficientNMS_TRT's default; entries past
``num_dets`` are zero). In PyTorch the NMS step is ``torchvision.ops.batched_nms``; in an ONNX
export the same step becomes one standard ``NonMaxSuppression`` node (via ``OnnxNMS.symbolic``),
whose selected ``(batch, class, box)`` indices are turned into the padded outputs with ScatterND
and TopK: a kept detection's score is written into a ``[B, C*A]`` grid of zeros and the ``K`` best
are taken. Both paths keep scores strictly above ``score_threshold`` and suppress IoU strictly
above ``iou_threshold``, as the ONNX operator specifies, so they select the same boxes.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import batched_nms


def nms_indices(
    boxes: torch.Tensor, scores: torch.Tensor, max_per_class: int, iou_threshold: float, score_threshold: float
) -> torch.Tensor:
    """Reference of ONNX NonMaxSuppression: boxes ``[B, A, 4]``, scores ``[B, C, A]`` -> ``[N, 3]`` int64."""
    out = []
    num_c, num_a = scores.shape[1], scores.shape[2]
    for b in range(boxes.shape[0]):
        s = scores[b].reshape(-1)
        keep = torch.nonzero(s > score_threshold)[:, 0]
        cls, idx = keep // num_a, keep % num_a
        kept = batched_nms(boxes[b, idx], s[keep], cls, iou_threshold)  # sorted by score, descending
        cls, idx = cls[kept], idx[kept]
        rank = torch.zeros_like(cls)
        for c in range(num_c):  # max_output_boxes_per_class, as the ONNX operator counts
            sel = cls == c
            rank[sel] = torch.arange(int(sel.sum()))
        sel = rank < max_per_class
        out.append(torch.stack([torch.full_like(idx[sel], b), cls[sel], idx[sel]], dim=1))
    return torch.cat(out) if out else torch.zeros(0, 3, dtype=torch.int64)


class OnnxNMS(torch.autograd.Function):
    """``nms_indices`` in PyTorch, the ``NonMaxSuppression`` operator (opset >= 11) in an ONNX export."""

    @staticmethod
    def forward(ctx, boxes, scores, max_per_class: int, iou_threshold: float, score_threshold: float):
        return nms_indices(boxes, scores, max_per_class, iou_threshold, score_threshold)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class, iou_threshold, score_threshold):
        return g.op(
            "NonMaxSuppression",
            boxes,
            scores,
            g.op("Constant", value_t=torch.tensor([max_per_class], dtype=torch.int64)),
            g.op("Constant", value_t=torch.tensor([iou_threshold], dtype=torch.float32)),
            g.op("Constant", value_t=torch.tensor([score_threshold], dtype=torch.float32)),
            center_point_box_i=0,
        )


def pad_detections(
    boxes: torch.Tensor, scores: torch.Tensor, selected: torch.Tensor, max_det: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Selected ``(b, c, a)`` triplets -> EfficientNMS-style padded outputs, best ``max_det`` per image."""
    bsz, num_c, num_a = scores.shape
    b, c, a = selected[:, 0], selected[:, 1], selected[:, 2]
    grid = torch.zeros(bsz, num_c * num_a, dtype=scores.dtype, device=scores.device)
    grid = grid.index_put((b, c * num_a + a), scores[b, c, a])
    k = min(max_det, num_c * num_a)
    top_scores, top_idx = grid.topk(k, dim=1)
    box_idx = top_idx % num_a
    classes = torch.div(top_idx, num_a, rounding_mode="floor")
    valid = top_scores > 0
    det_boxes = boxes.gather(1, box_idx[..., None].expand(-1, -1, 4)) * valid[..., None].to(boxes.dtype)
    det_classes = (classes * valid.to(classes.dtype)).to(torch.int32)
    num_dets = valid.sum(dim=1, keepdim=True).to(torch.int32)
    return num_dets, det_boxes, top_scores, det_classes


class EfficientNMSOutputs(nn.Module):
    """``(boxes [B,A,4], scores [B,A,C]) -> (num_dets, det_boxes, det_scores, det_classes)``."""

    def __init__(self, max_det: int = 100, iou_threshold: float = 0.6, score_threshold: float = 0.001):
        super().__init__()
        if not score_threshold > 0:
            raise ValueError("score_threshold must be > 0 (padded entries are the zero scores)")
        self.max_det, self.iou_threshold, self.score_threshold = max_det, iou_threshold, score_threshold

    def forward(self, boxes: torch.Tensor, scores: torch.Tensor):
        scores_t = scores.transpose(1, 2).contiguous()
        selected = OnnxNMS.apply(boxes, scores_t, self.max_det, self.iou_threshold, self.score_threshold)
        return pad_detections(boxes, scores_t, selected, self.max_det)
