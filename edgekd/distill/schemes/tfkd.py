"""Teacher-free KD by virtual-teacher regularisation (Tf-KD_reg; Yuan, Tay, Li, Wang, Feng, CVPR 2020,
"Revisiting Knowledge Distillation via Label Smoothing Regularization").

The virtual teacher puts probability ``a`` on the correct class and (1-a)/(K-1) on every other,
softened at temperature T as in the authors' code (``softmax(p_d / T)``):

    loss = (1 - alpha) * CE(s, y) + alpha * multiplier * KL( softmax(p_d / T) || softmax(s) )

(KL summed over classes, batch mean.) The paper writes a = 0.9 for the virtual teacher; the authors'
code fixes it at 0.99 and tunes alpha, T and a multiplier per model. Our defaults: a 0.9, T 20,
alpha 0.1, multiplier 1 (the official code's ``nn.KLDivLoss()`` averages over B*K entries and
multiplies by ``multiplier``; with K classes that equals ours with ``multiplier_ours = multiplier / K``).
No teacher network is used at all, so the guard also uses this as its teacher-free fallback.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgekd.distill.schemes.base import Scheme, SchemeJob, SchemeOutcome, TrainHook, register_scheme, train_with


def virtual_teacher(target: torch.Tensor, num_classes: int, correct_prob: float) -> torch.Tensor:
    """(B, K) distribution: ``correct_prob`` on the label, the rest spread evenly."""
    rest = (1.0 - correct_prob) / max(num_classes - 1, 1)
    p = torch.full((target.shape[0], num_classes), rest, device=target.device)
    return p.scatter_(1, target.view(-1, 1), correct_prob)


def tfkd_reg(logits: torch.Tensor, target: torch.Tensor, correct_prob: float = 0.9, T: float = 20.0) -> torch.Tensor:
    """KL(softmax(p_d / T) || softmax(logits)), summed over classes, averaged over the batch."""
    soft = F.softmax(virtual_teacher(target, logits.shape[1], correct_prob) / T, dim=1)
    return F.kl_div(F.log_softmax(logits, dim=1), soft, reduction="batchmean")


class TfKDHook(TrainHook):
    def __init__(self, correct_prob: float, T: float, alpha: float, multiplier: float):
        super().__init__()
        self.correct_prob, self.T, self.alpha, self.multiplier = correct_prob, T, alpha, multiplier

    def terms(self, x, y, idx, logits, teacher_logits, epoch):
        return {"tfkd": self.alpha * self.multiplier * tfkd_reg(logits, y, self.correct_prob, self.T)}


def tfkd_setup(job: SchemeJob):
    """The DistillConfig (CE weight 1 - alpha, no teacher methods) and hook of a Tf-KD run."""
    c = job.distill.tfkd
    config = job.distill.model_copy(update={"ce_weight": 1.0 - c.alpha, "methods": []})
    return config, TfKDHook(c.correct_prob, c.T, c.alpha, c.multiplier)


@register_scheme("tfkd")
class TfKD(Scheme):
    uses_teacher = False

    def run(self, job: SchemeJob) -> SchemeOutcome:
        config, hook = tfkd_setup(job)
        student = job.new_student()
        result = train_with(job, student, config, [], hooks=[hook])
        c = job.distill.tfkd
        return SchemeOutcome(student, result, {"tfkd": c.model_dump()})
