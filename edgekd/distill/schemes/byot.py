"""Self-distillation with auxiliary heads (BYOT; Zhang, Song, Gao, Chen, Bao, Ma, ICCV 2019, "Be Your
Own Teacher: Improve the Performance of Convolutional Neural Networks via Self Distillation").

The student is cut at its stages (found by probing: where the resolution changes). Each shallow
stage i gets a head: a bottleneck (1x1 conv, stride-2 3x3 convs down to the deepest stage's
resolution, 1x1 conv to its channels; BN-ReLU after each), global pooling to a feature f_i, and a
linear classifier q_i. The student's own classifier is the deepest head q_C (trained with CE) and
its pooled last-stage feature is f_C. Each shallow head adds

    (1 - alpha) * CE(q_i, y) + alpha * H(softmax(q_C / T), softmax(q_i / T)) + lambda * ||A_i f_i - f_C||_2

with q_C and f_C detached (the deepest head teaches), H the soft cross-entropy averaged over the
batch (no T^2 factor), A_i a linear adaptation layer, and ||.||_2 the plain (not squared) L2 norm
over the whole batch; the shallowest head has no feature term. This is the authors' released code
(ArchipLab-LinfengZhang/pytorch-self-distillation-final, the MobileNetV2 script; its ResNet script
drops the feature term), with its defaults alpha 0.3, T 3, lambda 0.03. The soft cross-entropy is
computed as the KL divergence, which differs from it by the teacher's entropy, a constant.

The conference paper writes the hint as lambda * ||F_i - F_C||^2 on feature maps. With lambda 0.03
summed over a map, that term dominated: on a CIFAR resnet8 at initialization its gradient on the
student was 57x that of the CE, and the student ended 19 points below plain training in
``benchmarks/kd_cifar10.py``. The authors' code does not do that, so neither does this.

The heads live in this hook, not in the student: ``student.pt`` and the ONNX export hold the plain
student and nothing of the heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.distill.functional import kd
from edgekd.distill.schemes.base import Scheme, SchemeJob, SchemeOutcome, TrainHook, register_scheme, train_by_hooks
from edgekd.distill.schemes.probe import Capture, find_stages


def _cbr(cin: int, cout: int, k: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class AuxHead(nn.Module):
    """Bottleneck to the deepest stage's shape (C, H, W), pool, a linear classifier and the feature's
    linear adaptation layer A_i."""

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
        self.adapt = nn.Linear(c_out, c_out)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pooled feature f_i and the logits q_i."""
        f = self.bottleneck(x)
        if tuple(f.shape[2:]) != self.size:
            f = F.adaptive_avg_pool2d(f, self.size)
        f = torch.flatten(F.adaptive_avg_pool2d(f, 1), 1)
        return f, self.fc(f)


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
        deep_f = torch.flatten(F.adaptive_avg_pool2d(feats[-1].detach(), 1), 1)
        deep_q = logits.detach()
        ce = kl = hint = 0.0
        for i, (head, f) in enumerate(zip(self.heads, feats[:-1], strict=True)):
            f_i, q_i = head(f)
            ce = ce + (1 - self.alpha) * F.cross_entropy(q_i, y)
            kl = kl + self.alpha * kd(q_i, deep_q, self.T) / (self.T * self.T)
            if i > 0:  # not the shallowest head
                hint = hint + self.feature_weight * torch.dist(head.adapt(f_i), deep_f)
        return {"byot_ce": ce, "byot_kd": kl, "byot_hint": hint}

    def detach(self) -> None:
        self.capture.remove()


@register_scheme("byot")
class BYOT(Scheme):
    uses_teacher = False

    def run(self, job: SchemeJob) -> SchemeOutcome:
        c = job.distill.byot
        student = job.new_student().to(job.device)
        hook = BYOTHook(job.data.input_shape, len(job.data.classes), c.alpha, c.T, c.feature_weight)
        hook.build(student)
        result = train_by_hooks(job, student, [hook])
        heads = [
            {"stage": name, "parameters": sum(p.numel() for p in head.parameters())}
            for name, head in zip(hook.stage_names, hook.heads, strict=False)
        ]
        metrics = {"byot": {**c.model_dump(), "stages": hook.stage_names, "heads": heads, "heads_exported": False}}
        return SchemeOutcome(student, result, metrics)
