"""Task-aligned assignment (TAL; Feng et al. 2021, TOOD, ICCV), written from the paper.

For every ground-truth box g and anchor point a the alignment metric is
``t = s^alpha * u^beta``, where ``s`` is the predicted probability of g's class at a and ``u`` the
IoU between the predicted box at a and g (alpha 1, beta 6, as in TOOD). Candidates are anchor points
inside g; the ``topk`` (13 in TOOD) candidates with the largest ``t`` become g's positives. An anchor
claimed by several boxes keeps the one it overlaps most. The soft class target of a positive is
``t_hat = t * max_u(g) / max_t(g)``: ``t`` rescaled so that each object's best positive has the
object's best IoU; every other target is 0. Predictions enter detached (the assignment is not
differentiated).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import box_iou


@dataclass
class Assignment:
    fg: torch.Tensor  # bool [B, A]
    labels: torch.Tensor  # int64 [B, A] (0 where not fg)
    boxes: torch.Tensor  # float [B, A, 4] xyxy pixels (0 where not fg)
    scores: torch.Tensor  # float [B, A, C] soft targets


def pad_targets(targets: list[dict[str, torch.Tensor]], device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """List of per-image ``{"boxes", "labels"}`` -> padded boxes ``[B, M, 4]``, labels ``[B, M]``, mask ``[B, M]``."""
    m = max([len(t["labels"]) for t in targets] + [1])
    b = len(targets)
    boxes, labels = torch.zeros(b, m, 4, device=device), torch.zeros(b, m, dtype=torch.int64, device=device)
    mask = torch.zeros(b, m, dtype=torch.bool, device=device)
    for i, t in enumerate(targets):
        n = len(t["labels"])
        boxes[i, :n], labels[i, :n], mask[i, :n] = t["boxes"], t["labels"], True
    return boxes, labels, mask


@torch.no_grad()
def task_aligned_assign(
    scores: torch.Tensor,
    boxes: torch.Tensor,
    points: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    gt_mask: torch.Tensor,
    topk: int = 13,
    alpha: float = 1.0,
    beta: float = 6.0,
    eps: float = 1e-9,
) -> Assignment:
    """TAL on a batch: predicted ``scores [B,A,C]`` (probabilities), ``boxes [B,A,4]``, ``points [A,2]``;
    padded ground truth ``gt_boxes [B,M,4]``, ``gt_labels [B,M]``, ``gt_mask [B,M]``."""
    bsz, num_a, num_c = scores.shape
    x, y = points[:, 0], points[:, 1]
    inside = (
        (x[None, None] - gt_boxes[..., 0:1] > eps)
        & (y[None, None] - gt_boxes[..., 1:2] > eps)
        & (gt_boxes[..., 2:3] - x[None, None] > eps)
        & (gt_boxes[..., 3:4] - y[None, None] > eps)
    )
    inside &= gt_mask[..., None]  # [B, M, A]
    ious = torch.stack([box_iou(gt_boxes[i], boxes[i]) for i in range(bsz)]).clamp(min=0) * inside
    cls_prob = scores.transpose(1, 2).gather(1, gt_labels[..., None].expand(-1, -1, num_a))  # [B, M, A]
    align = cls_prob.pow(alpha) * ious.pow(beta) * inside
    k = min(topk, num_a)
    top_idx = align.topk(k, dim=-1).indices
    pos = torch.zeros_like(inside).scatter_(-1, top_idx, True) & inside & (align > 0)
    # an anchor claimed by several objects keeps the one with the highest IoU
    multi = pos.sum(1, keepdim=True) > 1
    best = torch.zeros_like(pos).scatter_(1, (ious * pos).argmax(1, keepdim=True), True)
    pos = torch.where(multi, best & pos, pos)
    fg = pos.any(1)
    gt_idx = pos.float().argmax(1)  # [B, A]
    labels = gt_labels.gather(1, gt_idx) * fg
    tboxes = gt_boxes.gather(1, gt_idx[..., None].expand(-1, -1, 4)) * fg[..., None]
    align = align * pos
    norm = align * (ious * pos).amax(-1, keepdim=True) / (align.amax(-1, keepdim=True) + eps)
    soft = norm.amax(1)  # [B, A]
    tscores = torch.nn.functional.one_hot(labels, num_c).to(scores.dtype) * (soft * fg)[..., None]
    return Assignment(fg, labels, tboxes, tscores)
