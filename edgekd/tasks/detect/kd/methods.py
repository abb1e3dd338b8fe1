"""Detection KD methods as small modules over one ``KDContext``, registered by name.

Each method reads what it needs from the context (student and teacher dense predictions, features
at matched strides, the TAL assignment, the targets, the teacher's detections) and returns one
scalar; ``Distiller`` weights and sums them. Feature methods own a 1x1-conv adapter per matched
level (student channels -> teacher channels), trained with the student.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from edgekd.tasks.detect.decode import box_to_distance, dfl_distances
from edgekd.tasks.detect.kd.feature import (
    box_mask,
    channel_wise_distillation,
    fine_grained_mask,
    masked_l2,
    pkd,
)
from edgekd.tasks.detect.kd.response import bounded_regression, dense_class_kd, localization_distillation


@dataclass
class PairInfo:
    teacher: dict
    student: dict
    matched: list[tuple[int, int, int]]  # (student level, teacher level, stride)
    student_channels: list[int]
    teacher_channels: list[int]
    teacher_strides: list[int]


@dataclass
class KDContext:
    images: torch.Tensor
    targets: list[dict[str, torch.Tensor]]
    student_feats: list[torch.Tensor]
    teacher_feats: list[torch.Tensor]
    student_dense: dict | None = None
    teacher_dense: dict | None = None
    assignment: object | None = None
    student_out: dict | None = None
    pseudo_targets: list[dict[str, torch.Tensor]] | None = None
    extra: dict = field(default_factory=dict)


class KDMethod(nn.Module):
    name = ""
    kind = ""  # "response", "feature" or "pseudo"

    def __init__(self, pair: PairInfo, **options):
        super().__init__()
        self.pair, self.options = pair, options


class FeatureMethod(KDMethod):
    kind = "feature"

    def __init__(self, pair: PairInfo, **options):
        super().__init__(pair, **options)
        self.adapters = nn.ModuleList(
            [nn.Conv2d(pair.student_channels[s], pair.teacher_channels[t], 1) for s, t, _ in pair.matched]
        )
        if options.get("identity_adapter"):  # same widths (a network and its INT8 copy): start at the identity
            for a in self.adapters:
                if a.in_channels == a.out_channels:
                    nn.init.dirac_(a.weight)
                    nn.init.zeros_(a.bias)

    def levels(self, ctx: KDContext):
        for adapter, (s, t, stride) in zip(self.adapters, self.pair.matched, strict=True):
            yield adapter(ctx.student_feats[s]), ctx.teacher_feats[t], stride


class Mimic(FeatureMethod):
    name = "mimic"

    def forward(self, ctx: KDContext) -> torch.Tensor:
        boxes = [t["boxes"] for t in ctx.targets]
        return sum(
            masked_l2(s, t, box_mask(boxes, tuple(t.shape[-2:]), stride)) for s, t, stride in self.levels(ctx)
        ) / len(self.adapters)


class FineGrained(FeatureMethod):
    name = "fgfi"

    def forward(self, ctx: KDContext) -> torch.Tensor:
        adapted = list(self.levels(ctx))
        masks = fine_grained_mask(
            [t["boxes"] for t in ctx.targets],
            [tuple(t.shape[-2:]) for _, t, _ in adapted],
            [stride for _, _, stride in adapted],
            psi=self.options.get("psi", 0.5),
        )
        n = sum(m.sum() for m in masks).clamp(min=1.0)  # one N_p over all levels, as over one map in the paper
        return sum(((s - t).pow(2) * m[:, None]).sum() for (s, t, _), m in zip(adapted, masks, strict=True)) / (2 * n)


class CWD(FeatureMethod):
    name = "cwd"

    def forward(self, ctx: KDContext) -> torch.Tensor:
        temp = self.options.get("temperature", 1.0)
        return sum(channel_wise_distillation(s, t, temp) for s, t, _ in self.levels(ctx))


class PKD(FeatureMethod):
    name = "pkd"

    def forward(self, ctx: KDContext) -> torch.Tensor:
        return sum(pkd(s, t) for s, t, _ in self.levels(ctx))


class DenseKD(KDMethod):
    """Class KD at the student's positives and wherever the teacher is confident (max prob > ``score``)."""

    name, kind = "dense_kd", "response"

    def forward(self, ctx: KDContext) -> torch.Tensor:
        s, t = ctx.student_dense["cls"], ctx.teacher_dense["cls"]
        mask = ctx.assignment.fg | (t.sigmoid().amax(-1) > self.options.get("score", 0.1))
        opts = self.options
        return dense_class_kd(s[mask], t[mask], opts.get("temperature", 1.0), opts.get("mode", "sigmoid"))


class BoundedRegression(KDMethod):
    """Chen 2017 on the (l, t, r, b) distances in stride units at the student's positives."""

    name, kind = "bounded_reg", "response"

    def forward(self, ctx: KDContext) -> torch.Tensor:
        sd, td, a = ctx.student_dense, ctx.teacher_dense, ctx.assignment
        stride = sd["strides"][None].expand(a.fg.shape[0], -1, -1)
        reg_max_s, reg_max_t = self.pair.student["reg_max"], self.pair.teacher["reg_max"]
        target = box_to_distance(sd["points"][None].expand_as(a.boxes[..., :2]), a.boxes)[a.fg] / stride[a.fg]
        s = dfl_distances(sd["reg"], reg_max_s)[a.fg]
        t = dfl_distances(td["reg"], reg_max_t)[a.fg]
        return bounded_regression(s, t, target, self.options.get("margin", 0.0))


class LD(KDMethod):
    name, kind = "ld", "response"

    def forward(self, ctx: KDContext) -> torch.Tensor:
        fg = ctx.assignment.fg
        return localization_distillation(
            ctx.student_dense["reg"][fg],
            ctx.teacher_dense["reg"][fg],
            self.pair.student["reg_max"],
            self.options.get("temperature", 10.0),
        )


class PseudoLabel(KDMethod):
    """The student's own loss with the teacher's detections (after NMS, score > ``conf``) as targets."""

    name, kind = "pseudo_label", "pseudo"

    def forward(self, ctx: KDContext) -> torch.Tensor:
        from edgekd.tasks.detect.loss import detection_loss

        s = self.pair.student
        return detection_loss(
            ctx.student_out, ctx.pseudo_targets, tuple(s["strides"]), s["reg_max"], dense=ctx.student_dense
        )["total"]


METHODS: dict[str, type[KDMethod]] = {
    m.name: m for m in (DenseKD, BoundedRegression, LD, Mimic, FineGrained, CWD, PKD, PseudoLabel)
}
