"""Correlation congruence (Peng et al., ICCV 2019) on the pooled penultimate vectors, Gaussian-RBF
kernel by a 2nd-order Taylor expansion (gamma 0.4), weight 0.02 with CE weight 1 (RepDistiller's
weight). The student's vector goes through a linear layer to 128-d (RepDistiller's ``LinearEmbed``).
RepDistiller also trains a linear layer on the teacher's side; here the teacher's vector is used
as it is (the B x B kernels need no common size), so the term cannot be met by both projections
collapsing together."""

from __future__ import annotations

import torch

from edgekd.distill import functional as EF
from edgekd.distill.connectors import LinearEmbed
from edgekd.distill.methods.base import Method


class CC(Method):
    name = "cc"
    taps = ("embedding",)
    default_weight = 0.02
    kind = "relation"

    def __init__(self, gamma: float = 0.4, order: int = 2, feat_dim: int = 128):
        super().__init__()
        self.gamma, self.order, self.feat_dim = float(gamma), int(order), int(feat_dim)
        self.embed: LinearEmbed | None = None

    def bind(self, student, teacher, info) -> None:
        self.embed = LinearEmbed(student["embedding"].shape[1], self.feat_dim)

    def forward(self, student, teacher, target, epoch) -> dict[str, torch.Tensor]:
        assert self.embed is not None, "cc: bind() was not called"
        return {"cc": EF.cc(self.embed(student["embedding"]), teacher["embedding"], self.gamma, self.order)}
