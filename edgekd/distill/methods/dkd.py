"""Decoupled KD (Zhao et al., CVPR 2022) on logits: alpha * TCKD + beta * NCKD, with mdistiller's
linear warm-up: the loss is multiplied by min(epoch / warmup, 1) with 1-based epochs (20 epochs).
mdistiller CIFAR defaults: alpha 1, beta 8, T 4, CE weight 1 (beta 2 for resnet56 -> resnet20;
REFERENCES.md)."""

from __future__ import annotations

import torch

from edgekd.distill import functional as EF
from edgekd.distill.methods.base import Method


class DKD(Method):
    name = "dkd"
    taps = ("logits",)
    default_weight = 1.0
    ce_weight = 1.0

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, T: float = 4.0, warmup: int = 20):
        super().__init__()
        if T <= 0 or warmup < 0:
            raise TypeError(f"need T > 0 and warmup >= 0, got T={T}, warmup={warmup}")
        self.alpha, self.beta, self.T, self.warmup = float(alpha), float(beta), float(T), int(warmup)

    def warmup_factor(self, epoch: int) -> float:
        """``epoch`` is 0-based (the trainer's); mdistiller counts from 1."""
        return 1.0 if self.warmup == 0 else min((epoch + 1) / self.warmup, 1.0)

    def forward(self, student, teacher, target, epoch) -> dict[str, torch.Tensor]:
        loss = EF.dkd(student["logits"], teacher["logits"], target, self.alpha, self.beta, self.T)
        return {"dkd": self.warmup_factor(epoch) * loss}
