"""Relational KD (Park et al., CVPR 2019) on the pooled penultimate vectors (RepDistiller's
``feat[-1]``): distance weight 25, angle weight 50 inside, method weight 1 with CE weight 1."""

from __future__ import annotations

import torch

from edgekd.distill import functional as EF
from edgekd.distill.methods.base import Method


class RKD(Method):
    name = "rkd"
    taps = ("embedding",)
    default_weight = 1.0
    kind = "relation"

    def __init__(self, w_dist: float = 25.0, w_angle: float = 50.0):
        super().__init__()
        self.w_dist, self.w_angle = float(w_dist), float(w_angle)

    def forward(self, student, teacher, target, epoch) -> dict[str, torch.Tensor]:
        return {"rkd": EF.rkd(student["embedding"], teacher["embedding"], self.w_dist, self.w_angle)}
