"""Distillation losses as pure functions of tensors, student first and teacher second.

Each docstring gives the formula and the paper; the methods in ``edgekd.distill.methods`` are thin
wrappers that pick the taps and weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = 4.0) -> torch.Tensor:
    """Hinton knowledge distillation (Hinton, Vinyals, Dean, 2015, "Distilling the Knowledge in a
    Neural Network").

        kd = T^2 * (1/B) * sum_b KL( softmax(t_b / T) || softmax(s_b / T) )

    The KL is summed over classes and averaged over the batch; the T^2 factor keeps the gradient
    scale independent of T. Identical to RepDistiller's ``DistillKL`` and mdistiller's ``kd_loss``.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"kd: student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ"
        )
    log_p_s = F.log_softmax(student_logits / T, dim=1)
    log_p_t = F.log_softmax(teacher_logits / T, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (T * T)
