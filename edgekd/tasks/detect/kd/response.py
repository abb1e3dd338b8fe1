"""Response-based detection KD: dense class KD, teacher-bounded regression, localization distillation.

Pure functions on already-matched locations (same anchor points in teacher and student).

- ``dense_class_kd`` -- Hinton et al. 2015 applied per location of a dense head.
  sigmoid (one binary problem per class, as in sigmoid-scored detectors):
  ``T^2 * mean_i sum_c BCE(sigmoid(t_ic / T), sigmoid(s_ic / T))``;
  softmax: ``T^2 * mean_i KL(softmax(t_i / T) || softmax(s_i / T))``.
- ``bounded_regression`` -- Chen et al. 2017 (NeurIPS), "Learning efficient object detection models
  with knowledge distillation": ``L_b = ||R_s - y||^2 if ||R_s - y||^2 + m > ||R_t - y||^2 else 0``
  (margin m = 0 in the paper), averaged over positives: the teacher is an upper bound the student
  is pushed under, never a target.
- ``localization_distillation`` -- Zheng et al. 2022 (CVPR), LD: for each box edge,
  ``T^2 * KL(softmax(z_t / T) || softmax(z_s / T))`` over the DFL bins, averaged over edges and
  locations; high temperature (10 in the paper).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dense_class_kd(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0, mode: str = "sigmoid"
) -> torch.Tensor:
    """Class KD on ``[N, C]`` logits at N matched locations (see module docstring)."""
    if student.numel() == 0:
        return student.sum() * 0.0
    t = temperature
    if mode == "sigmoid":
        target = (teacher / t).sigmoid()
        per = F.binary_cross_entropy_with_logits(student / t, target, reduction="none").sum(-1)
    elif mode == "softmax":
        per = F.kl_div(
            (student / t).log_softmax(-1), (teacher / t).log_softmax(-1), reduction="none", log_target=True
        ).sum(-1)
    else:
        raise ValueError(f"mode must be 'sigmoid' or 'softmax', not {mode!r}")
    return per.mean() * t * t


def bounded_regression(
    student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, margin: float = 0.0
) -> torch.Tensor:
    """Chen 2017's teacher-bounded L2 on ``[N, 4]`` regression outputs and targets."""
    if student.numel() == 0:
        return student.sum() * 0.0
    ls = (student - target).pow(2).sum(-1)
    lt = (teacher - target).pow(2).sum(-1)
    return torch.where(ls + margin > lt, ls, torch.zeros_like(ls)).mean()


def localization_distillation(
    student: torch.Tensor, teacher: torch.Tensor, reg_max: int, temperature: float = 10.0
) -> torch.Tensor:
    """LD on ``[N, 4 * reg_max]`` DFL bin logits (see module docstring)."""
    if student.numel() == 0:
        return student.sum() * 0.0
    t = temperature
    s = (student.reshape(-1, reg_max) / t).log_softmax(-1)
    q = (teacher.reshape(-1, reg_max) / t).log_softmax(-1)
    return F.kl_div(s, q, reduction="none", log_target=True).sum(-1).mean() * t * t
