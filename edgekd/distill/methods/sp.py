"""Similarity-preserving KD (Tung & Mori, ICCV 2019) on the last stage output (RepDistiller's
``feat[-2]``), weight 3000 with CE weight 1. L2 row normalisation (paper, RepDistiller)."""

from __future__ import annotations

import torch

from edgekd.distill import functional as EF
from edgekd.distill.methods.base import Method


class SP(Method):
    name = "sp"
    taps = ("stages",)
    default_weight = 3000.0
    kind = "relation"

    def forward(self, student, teacher, target, epoch) -> dict[str, torch.Tensor]:
        return {"sp": EF.sp(student["stages"][-1], teacher["stages"][-1])}
