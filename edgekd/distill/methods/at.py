"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017) on the stage outputs (RepDistiller: the
three stage outputs ``feat[1:-1]`` of the CIFAR ResNets), p = 2, weight 1000 with CE weight 1.
No connector: attention maps are channel-free; the larger map is pooled to the smaller."""

from __future__ import annotations

import torch

from edgekd.distill import functional as EF
from edgekd.distill.methods.base import Method
from edgekd.errors import EdgekdError


def paired_stages(student: dict, teacher: dict, method: str) -> tuple[list, list]:
    """The last n stage maps of each model, n = the smaller stage count (stages align from the end)."""
    s, t = student["stages"], teacher["stages"]
    n = min(len(s), len(t))
    if n == 0:
        raise EdgekdError(f"{method}: no stage taps; set distill.taps.stages")
    return list(s[-n:]), list(t[-n:])


class AT(Method):
    name = "at"
    taps = ("stages",)
    default_weight = 1000.0
    kind = "feature"

    def __init__(self, p: float = 2.0):
        super().__init__()
        self.p = float(p)

    def forward(self, student, teacher, target, epoch) -> dict[str, torch.Tensor]:
        s, t = paired_stages(student, teacher, "at")
        return {"at": EF.at(s, t, self.p)}
