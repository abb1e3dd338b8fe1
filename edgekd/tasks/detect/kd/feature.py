"""Feature-based detection KD: mimic, fine-grained imitation, CWD, PKD (pure functions + masks).

Student maps arrive already adapted to the teacher's channels (a 1x1 conv per matched level).

- ``masked_l2`` -- the imitation loss ``1 / (2 N_p) * sum_{i,j,c} I_ij (s_ijc - t_ijc)^2`` with
  ``N_p = sum I`` (Wang et al. 2019, CVPR, fine-grained feature imitation; weight 0.01 there). With
  ``box_mask`` it is Li et al. 2017's (CVPR) mimic loss: L2 between adapted student and teacher
  features inside object regions; a one-stage student has no proposals, so the regions are the
  ground-truth boxes.
- ``fine_grained_mask`` -- Wang 2019's mask: for each object, the IoU of every anchor with it; the
  locations whose anchor has IoU > psi * (that object's largest IoU) are imitated (psi 0.5). An
  anchor-free student has no anchors, so each location gets one square anchor of side
  ``anchor_scale * stride`` (RetinaNet's base size 4x stride); the largest IoU is over all levels.
- ``channel_wise_distillation`` -- Shu et al. 2021 (ICCV), CWD: per channel, softmax over the
  spatial positions, ``T^2 / C * sum_c KL(t_c || s_c)``, averaged over the batch (T 1 for detection
  in MMRazor's configs).
- ``pkd`` -- Cao et al. 2022 (NeurIPS), PKD: standardise each map per channel (zero mean, unit
  variance over batch and positions), then ``MSE / 2`` -- MMRazor's form; it uses weight 6 on FPN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import box_iou


def masked_l2(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``1/(2 N_p) sum mask * (s - t)^2`` for ``[B, C, H, W]`` maps and a ``[B, H, W]`` 0/1 mask."""
    n = mask.sum().clamp(min=1.0)
    return ((student - teacher).pow(2) * mask[:, None]).sum() / (2 * n)


def level_points(h: int, w: int, stride: int) -> torch.Tensor:
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) * stride
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)


def box_mask(boxes: list[torch.Tensor], shape: tuple[int, int], stride: int) -> torch.Tensor:
    """``[B, H, W]``: 1 where the location's centre lies inside any of the image's boxes."""
    pts = level_points(*shape, stride)
    out = []
    for b in boxes:
        if len(b) == 0:
            out.append(torch.zeros(shape))
            continue
        inside = (
            (pts[None, :, 0] >= b[:, None, 0])
            & (pts[None, :, 0] <= b[:, None, 2])
            & (pts[None, :, 1] >= b[:, None, 1])
            & (pts[None, :, 1] <= b[:, None, 3])
        )
        out.append(inside.any(0).float().reshape(shape))
    return torch.stack(out)


def fine_grained_mask(
    boxes: list[torch.Tensor],
    shapes: list[tuple[int, int]],
    strides: list[int],
    psi: float = 0.5,
    anchor_scale: float = 4.0,
) -> list[torch.Tensor]:
    """Wang 2019's imitation mask per level (``[B, H, W]`` each), one square anchor per location."""
    masks = [[] for _ in shapes]
    for b in boxes:
        ious = []
        for (h, w), s in zip(shapes, strides, strict=True):
            pts, half = level_points(h, w, s), anchor_scale * s / 2
            anchors = torch.cat([pts - half, pts + half], dim=1)
            ious.append(box_iou(b, anchors) if len(b) else torch.zeros(0, h * w))
        best = torch.cat(ious, dim=1).amax(1, keepdim=True) if len(b) else torch.zeros(0, 1)
        for k, ((h, w), iou) in enumerate(zip(shapes, ious, strict=True)):
            m = (iou > psi * best).any(0) if len(b) else torch.zeros(h * w, dtype=torch.bool)
            masks[k].append(m.float().reshape(h, w))
    return [torch.stack(m) for m in masks]


def channel_wise_distillation(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """CWD on ``[B, C, H, W]`` maps: ``T^2 / C * sum_c KL(softmax_HW(t_c / T) || softmax_HW(s_c / T))``, mean over B."""
    b, c = student.shape[:2]
    t = temperature
    s = (student.reshape(b, c, -1) / t).log_softmax(-1)
    q = (teacher.reshape(b, c, -1) / t).log_softmax(-1)
    kl = F.kl_div(s, q, reduction="none", log_target=True).sum(-1)  # [B, C]
    return kl.sum() * t * t / (b * c)


def standardize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Zero mean, unit (unbiased) std per channel over batch and positions."""
    c = x.shape[1]
    flat = x.transpose(0, 1).reshape(c, -1)
    flat = (flat - flat.mean(-1, keepdim=True)) / (flat.std(-1, keepdim=True) + eps)
    return flat.reshape(c, x.shape[0], *x.shape[2:]).transpose(0, 1)


def pkd(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """PKD: ``MSE(standardize(s), standardize(t)) / 2``."""
    return F.mse_loss(standardize(student), standardize(teacher)) / 2
