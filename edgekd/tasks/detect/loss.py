"""The edge detector's own (student-alone) loss: TAL assignment + quality focal + GIoU + DFL.

- Classification: quality focal loss (Li et al. 2020, GFL): ``BCE(p, y) * |y - p|^beta``, beta 2, with
  the soft TAL targets ``y`` (IoU-aware scores), summed and divided by the sum of the targets.
- Box: ``1 - GIoU`` (Rezatofighi et al. 2019) via ``torchvision.ops.generalized_box_iou_loss`` on
  the positives, each weighted by its target score.
- DFL (Li et al. 2020): for a target distance ``d`` (stride units) between bins ``k = floor(d)`` and
  ``k + 1``: ``-((k + 1 - d) log S_k + (d - k) log S_{k+1})``, averaged over the four sides,
  weighted like the box term.
Weights default to GFL's public config (cls 1.0, GIoU 2.0, DFL 0.25).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss

from edgekd.tasks.detect.assign import Assignment, pad_targets, task_aligned_assign
from edgekd.tasks.detect.decode import anchor_points, box_to_distance, dfl_distances, distance_to_box, flatten_levels

LOSS_WEIGHTS = {"cls": 1.0, "box": 2.0, "dfl": 0.25}


def quality_focal_loss(logits: torch.Tensor, target: torch.Tensor, beta: float = 2.0) -> torch.Tensor:
    """Element-wise QFL (GFL, Li et al. 2020): ``BCE(sigmoid(x), y) * |y - sigmoid(x)|^beta``."""
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none") * (
        (logits.sigmoid() - target).abs().pow(beta)
    )


def dfl_loss(reg_logits: torch.Tensor, target: torch.Tensor, reg_max: int) -> torch.Tensor:
    """DFL per box: ``reg_logits [N, 4R]``, ``target [N, 4]`` distances in bins -> ``[N]``."""
    t = target.clamp(0, reg_max - 1 - 0.01)
    left = t.floor().long()
    wl, wr = left + 1 - t, t - left
    logp = reg_logits.reshape(-1, 4, reg_max).log_softmax(-1)
    lp_left = logp.gather(-1, left[..., None])[..., 0]
    lp_right = logp.gather(-1, (left + 1)[..., None])[..., 0]
    return -(wl * lp_left + wr * lp_right).mean(-1)


def dense_predictions(out: dict[str, list[torch.Tensor]], strides: tuple[int, ...], reg_max: int) -> dict:
    """Flatten a detector's raw maps: cls logits, reg logits, decoded boxes, anchor points, strides."""
    points, stride_col = anchor_points(out["cls"], strides)
    cls = flatten_levels(out["cls"])
    reg = flatten_levels(out["reg"])
    boxes = distance_to_box(points, dfl_distances(reg, reg_max) * stride_col)
    return {"cls": cls, "reg": reg, "boxes": boxes, "points": points, "strides": stride_col}


def assign(dense: dict, targets: list[dict[str, torch.Tensor]]) -> Assignment:
    gt_boxes, gt_labels, gt_mask = pad_targets(targets, dense["cls"].device)
    return task_aligned_assign(
        dense["cls"].detach().sigmoid(), dense["boxes"].detach(), dense["points"], gt_boxes, gt_labels, gt_mask
    )


def detection_loss(
    out: dict[str, list[torch.Tensor]],
    targets: list[dict[str, torch.Tensor]],
    strides: tuple[int, ...],
    reg_max: int,
    weights: dict[str, float] | None = None,
    dense: dict | None = None,
    assignment: Assignment | None = None,
) -> dict[str, torch.Tensor]:
    """Named loss terms and their weighted ``total`` for a batch of raw maps and targets."""
    w = {**LOSS_WEIGHTS, **(weights or {})}
    dense = dense if dense is not None else dense_predictions(out, strides, reg_max)
    a = assignment if assignment is not None else assign(dense, targets)
    norm = a.scores.sum().clamp(min=1.0)
    cls = quality_focal_loss(dense["cls"], a.scores).sum() / norm
    if a.fg.any():
        weight = a.scores.sum(-1)[a.fg]
        box = (generalized_box_iou_loss(dense["boxes"][a.fg], a.boxes[a.fg], reduction="none") * weight).sum() / norm
        target_bins = (
            box_to_distance(dense["points"][None].expand_as(a.boxes[..., :2]), a.boxes)[a.fg]
            / (dense["strides"][None].expand(a.fg.shape[0], -1, -1)[a.fg])
        )
        dfl = (dfl_loss(dense["reg"][a.fg], target_bins, reg_max) * weight).sum() / norm
    else:
        box = dfl = dense["boxes"].sum() * 0.0
    terms = {"cls": cls, "box": box, "dfl": dfl}
    terms["total"] = sum(w[k] * v for k, v in terms.items())
    return terms
