"""FSP (Yim et al., CVPR 2017): match the FSP matrices between consecutive stage outputs, weight 50
with CE weight 1.

Differences from RepDistiller, said plainly: RepDistiller's FSP also uses the stem output and
trains in two phases (30 epochs of FSP alone, then CE/KD without it); here the FSP term is added
to the main loss for the whole run over the stage taps. RepDistiller requires equal channel
counts; where a student stage is narrower or wider than the teacher's, a 1x1 conv-BN connector
maps it to the teacher's width first."""

from __future__ import annotations

import torch
from torch import nn

from edgekd.distill import functional as EF
from edgekd.distill.connectors import ConvBN
from edgekd.distill.methods.at import paired_stages
from edgekd.distill.methods.base import Method
from edgekd.errors import EdgekdError


class FSP(Method):
    name = "fsp"
    taps = ("stages",)
    default_weight = 50.0
    kind = "feature"

    def __init__(self):
        super().__init__()
        self.adapters = nn.ModuleList()

    def bind(self, student, teacher, info) -> None:
        s, t = paired_stages(student, teacher, "fsp")
        if len(s) < 2:
            raise EdgekdError("fsp: needs at least 2 stage taps on each model; set distill.taps.stages")
        self.adapters = nn.ModuleList(
            nn.Identity() if a.shape[1] == b.shape[1] else ConvBN(a.shape[1], b.shape[1])
            for a, b in zip(s, t, strict=True)
        )

    def forward(self, student, teacher, target, epoch) -> dict[str, torch.Tensor]:
        s, t = paired_stages(student, teacher, "fsp")
        s = [adapt(f) for adapt, f in zip(self.adapters, s, strict=True)]
        return {"fsp": EF.fsp(s, t)}
