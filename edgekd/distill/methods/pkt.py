"""Probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018) on the pooled penultimate
vectors, cosine kernel, weight 30000 with CE weight 1 (RepDistiller)."""

from __future__ import annotations

import torch

from edgekd.distill import functional as EF
from edgekd.distill.methods.base import Method


class PKT(Method):
    name = "pkt"
    taps = ("embedding",)
    default_weight = 30000.0
    kind = "relation"

    def forward(self, student, teacher, target, epoch) -> dict[str, torch.Tensor]:
        return {"pkt": EF.pkt(student["embedding"], teacher["embedding"])}
