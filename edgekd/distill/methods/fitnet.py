"""FitNets (Romero et al., ICLR 2015): the student's hint-layer map, through a conv-BN-ReLU
regressor, regresses the teacher's by MSE. As RepDistiller: the stage-2 output (``hint=1``
indexes ``stages``, i.e. ``layer2`` of the CIFAR ResNets), weight 100 with CE weight 1, trained in
one phase (RepDistiller's FitNet is single-phase too)."""

from __future__ import annotations

import torch

from edgekd.distill import functional as EF
from edgekd.distill.connectors import ConvReg
from edgekd.distill.methods.base import Method
from edgekd.errors import EdgekdError


def stage_at(taps: dict, index: int, side: str, method: str) -> torch.Tensor:
    stages = taps["stages"]
    if not -len(stages) <= index < len(stages):
        raise EdgekdError(
            f"{method}: stage {index} does not exist; the {side} has {len(stages)} stage taps "
            "(set the method's params or distill.taps.stages)"
        )
    return stages[index]


class FitNet(Method):
    name = "fitnet"
    taps = ("stages",)
    default_weight = 100.0
    kind = "feature"

    def __init__(self, hint: int = 1):
        super().__init__()
        self.hint = int(hint)
        self.regressor: ConvReg | None = None

    def bind(self, student, teacher, info) -> None:
        s = stage_at(student, self.hint, "student", "fitnet")
        t = stage_at(teacher, self.hint, "teacher", "fitnet")
        self.regressor = ConvReg(s.shape, t.shape)

    def forward(self, student, teacher, target, epoch) -> dict[str, torch.Tensor]:
        assert self.regressor is not None, "fitnet: bind() was not called"
        s = self.regressor(stage_at(student, self.hint, "student", "fitnet"))
        return {"fitnet": EF.fitnet(s, stage_at(teacher, self.hint, "teacher", "fitnet"))}
