"""Self-distillation with auxiliary heads (BYOT; Zhang, Song, Gao, Chen, Bao, Ma, ICCV 2019, "Be Your
Own Teacher: Improve the Performance of Convolutional Neural Networks via Self Distillation").

The student is cut at its stages (found by probing: where the resolution changes). Each shallow
stage i gets a head: a bottleneck (1x1 conv, stride-2 3x3 convs down to the deepest stage's
resolution, 1x1 conv to its channels; BN-ReLU after each) giving a feature F_i shaped like the
deepest feature F_C, then global pooling and a linear classifier q_i. The student's own classifier
is the deepest head q_C (trained with CE). Each shallow head adds

    (1 - alpha) * CE(q_i, y) + alpha * T^2 * KL(softmax(q_C / T) || softmax(q_i / T)) + lambda * ||F_i - F_C||^2

with q_C and F_C detached (the deepest head teaches), ||.||^2 summed over the feature map and
averaged over the batch. Defaults alpha 0.3, T 3, lambda 0.03 follow the authors' released code.
The heads live in this hook, not in the student: ``student.pt`` and the ONNX export hold the plain
student and nothing of the heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.distill.functional import kd
from edgekd.distill.schemes.base import Scheme, SchemeJob, SchemeOutcome, TrainHook, register_scheme, train_with
from edgekd.distill.schemes.probe import Capture, find_stages


def _cbr(cin: int, cout: int, k: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class AuxHead(nn.Module):
    """Bottleneck to the deepest stage's shape (C, H, W), then pool and a linear classifier."""

    def __init__(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        c_in, h = in_shape[0], in_shape[1]
        c_out, h_out, w_out = out_shape
        mid = max(16, c_out // 2)
        layers = _cbr(c_in, mid, 1)
        while h > h_out:
            layers += _cbr(mid, mid, 3, 2)
            h = (h + 1) // 2
        layers += _cbr(mid, c_out, 1)
        self.bottleneck = nn.Sequential(*layers)
        self.size = (h_out, w_out)
        self.fc = nn.Linear(c_out, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.bottleneck(x)
        if tuple(f.shape[2:]) != self.size:
            f = F.adaptive_avg_pool2d(f, self.size)
        return f, self.fc(torch.flatten(F.adaptive_avg_pool2d(f, 1), 1))


class BYOTHook(TrainHook):
    def __init__(self, input_shape, num_classes: int, alpha: float = 0.3, T: float = 3.0, feature_weight: float = 0.03):
        super().__init__()
        self.input_shape, self.num_classes = tuple(input_shape), num_classes
        self.alpha, self.T, self.feature_weight = alpha, T, feature_weight
        self.heads = nn.ModuleList()
        self.stage_names: list[str] = []

    def build(self, student: nn.Module) -> None:
        """Find the stages and size the heads (before the optimizer is made)."""
        device = next(student.parameters()).device
        stages = find_stages(student, self.input_shape, device)
        self.stage_names = [name for name, _ in stages]
        deepest = stages[-1][1]
        self.heads = nn.ModuleList([AuxHead(shape, deepest, self.num_classes) for _, shape in stages[:-1]]).to(device)

    def attach(self, student, setup) -> None:
        super().attach(student, setup)
        if not self.stage_names:
            self.build(student)
        self.capture = Capture(student, self.stage_names)

    def terms(self, x, y, idx, logits, teacher_logits, epoch):
        feats = [self.capture.out[n] for n in self.stage_names]
        deep_f, deep_q = feats[-1].detach(), logits.detach()
        ce = kl = hint = 0.0
        for head, f in zip(self.heads, feats[:-1], strict=True):
            f_i, q_i = head(f)
            ce = ce + (1 - self.alpha) * F.cross_entropy(q_i, y)
            kl = kl + self.alpha * kd(q_i, deep_q, self.T)
            hint = hint + self.feature_weight * (f_i - deep_f).pow(2).flatten(1).sum(1).mean()
        return {"byot_ce": ce, "byot_kd": kl, "byot_hint": hint}

    def detach(self) -> None:
        self.capture.remove()


@register_scheme("byot")
class BYOT(Scheme):
    uses_teacher = False

    def run(self, job: SchemeJob) -> SchemeOutcome:
        c = job.distill.byot
        config = job.distill.model_copy(update={"ce_weight": 1.0, "methods": []})
        student = job.new_student().to(job.device)
        hook = BYOTHook(job.data.input_shape, len(job.data.classes), c.alpha, c.T, c.feature_weight)
        hook.build(student)
        result = train_with(job, student, config, [], hooks=[hook])
        heads = [
            {"stage": name, "parameters": sum(p.numel() for p in head.parameters())}
            for name, head in zip(hook.stage_names, hook.heads, strict=False)
        ]
        metrics = {"byot": {**c.model_dump(), "stages": hook.stage_names, "heads": heads, "heads_exported": False}}
        return SchemeOutcome(student, result, metrics)
