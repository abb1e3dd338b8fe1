"""Hinton KD on logits (response-based knowledge). Default T=4 as in RepDistiller/mdistiller."""

from __future__ import annotations

import torch

from edgekd.distill import functional as EF
from edgekd.distill.methods.base import Method


class KD(Method):
    name = "kd"
    taps = ("logits",)
    default_weight = 0.9  # 0.1 * CE + 0.9 * KD (RepDistiller / mdistiller)
    ce_weight = 0.1

    def __init__(self, T: float = 4.0):
        super().__init__()
        if T <= 0:
            raise TypeError(f"temperature T must be > 0, got {T}")
        self.T = float(T)

    def forward(self, student, teacher, target, epoch) -> dict[str, torch.Tensor]:
        return {"kd": EF.kd(student["logits"], teacher["logits"], self.T)}
