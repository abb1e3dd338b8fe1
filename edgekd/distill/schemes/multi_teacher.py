"""Multi-teacher distillation: the soft labels of several teachers, averaged or confidence-weighted.

The teachers' softened distributions are mixed per sample at temperature T,

    p_mix = sum_k w_k * softmax(z_k / T),   logits handed to the methods = T * log p_mix

(so ``softmax(logits / T) = p_mix`` exactly and KD/DKD at the same T see the mixture).
``average``: w_k = 1/K. ``confidence``: the per-sample weights of CA-MKD (Zhang, Chen, Wang, ICASSP
2022, "Confidence-Aware Multi-Teacher Knowledge Distillation"): w_k = (1 - softmax_k(CE(z_k, y))) / (K-1),
so a teacher that is more confident in the correct label weighs more. Feature taps come from one
chosen teacher (``feature_teacher``, default the run's ``--teacher``), which is the teacher the
training loop runs; the others run only for their logits.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.distill.schemes.base import Scheme, SchemeJob, SchemeOutcome, methods_of, register_scheme, train_with
from edgekd.errors import EdgekdError


def mix_weights(teacher_logits: list[torch.Tensor], target: torch.Tensor, weighting: str) -> torch.Tensor:
    """(K, B) per-sample teacher weights summing to 1 over K."""
    k, b = len(teacher_logits), target.shape[0]
    if weighting == "average" or k == 1:
        return torch.full((k, b), 1.0 / k, device=target.device)
    ce = torch.stack([F.cross_entropy(z, target, reduction="none") for z in teacher_logits])  # (K, B)
    return (1.0 - F.softmax(ce, dim=0)) / (k - 1)


def mix_logits(teacher_logits: list[torch.Tensor], weights: torch.Tensor, T: float) -> torch.Tensor:
    probs = torch.stack([F.softmax(z / T, dim=1) for z in teacher_logits])  # (K, B, C)
    mixed = (weights.unsqueeze(-1) * probs).sum(0)
    return T * mixed.clamp_min(1e-12).log()


class MultiTeacher(nn.Module):
    """``teacher_fn`` for the training loop: runs every teacher, returns the mixed logits."""

    def __init__(self, teachers: list[nn.Module], weighting: str = "confidence", T: float = 4.0):
        super().__init__()
        self.teachers = nn.ModuleList(teachers)
        for t in self.teachers:
            t.eval()
            for p in t.parameters():
                p.requires_grad_(False)
        self.weighting, self.T = weighting, T
        self.last_weights: torch.Tensor | None = None

    @torch.no_grad()
    def forward(self, x, y, idx=None, epoch=0) -> torch.Tensor:
        logits = [t(x) for t in self.teachers]
        self.last_weights = mix_weights(logits, y, self.weighting)
        return mix_logits(logits, self.last_weights, self.T)


def load_teachers(paths: list[str], num_classes: int, input_shape) -> list[nn.Module]:
    from edgekd.models.checkpoint import load_model_file

    out = []
    for p in paths:
        loaded = load_model_file(Path(p).expanduser())
        with torch.no_grad():
            n = loaded.model.eval()(torch.zeros((2, *input_shape))).shape[1]
        if n != num_classes:
            raise EdgekdError(
                f"teacher {p} predicts {n} classes but the data has {num_classes}; pass teachers of this dataset"
            )
        out.append(loaded.model)
    return out


@register_scheme("multi_teacher")
class MultiTeacherScheme(Scheme):
    def run(self, job: SchemeJob) -> SchemeOutcome:
        c = job.distill.multi_teacher
        if not c.checkpoints:
            raise EdgekdError("multi_teacher needs more teachers; set distill.multi_teacher.checkpoints=[A.pt, B.pt]")
        teachers = [job.teacher, *load_teachers(c.checkpoints, len(job.data.classes), job.data.input_shape)]
        if c.feature_teacher >= len(teachers):
            raise EdgekdError(
                f"distill.multi_teacher.feature_teacher={c.feature_teacher} but there are {len(teachers)} "
                f"teachers; use 0..{len(teachers) - 1}"
            )
        # the chosen feature teacher first: the loop's forward hooks see it
        order = [c.feature_teacher] + [i for i in range(len(teachers)) if i != c.feature_teacher]
        fn = MultiTeacher([teachers[i] for i in order], c.weighting, c.T).to(job.device)
        student = job.new_student()
        result = train_with(
            job, student, job.distill, methods_of(job), teacher_fn=fn, teacher=teachers[c.feature_teacher]
        )
        return SchemeOutcome(student, result, {"multi_teacher": {**c.model_dump(), "teachers": len(teachers)}})
