"""Neuron selectivity transfer (Huang & Wang, 2017) on the stage outputs (RepDistiller: the same
``feat[1:-1]`` as AT), polynomial kernel, weight 50 with CE weight 1. Channel counts may differ."""

from __future__ import annotations

import torch

from edgekd.distill import functional as EF
from edgekd.distill.methods.at import paired_stages
from edgekd.distill.methods.base import Method


class NST(Method):
    name = "nst"
    taps = ("stages",)
    default_weight = 50.0
    kind = "feature"

    def forward(self, student, teacher, target, epoch) -> dict[str, torch.Tensor]:
        s, t = paired_stages(student, teacher, "nst")
        return {"nst": EF.nst(s, t)}
