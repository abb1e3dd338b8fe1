"""Lifelong learning without forgetting (LwF; Li & Hoiem, ECCV 2016 / TPAMI 2017).

A model trained on the old classes is extended to new ones: its classifier grows (the old rows are
kept, new rows initialised fresh), and while the new classes are learnt from their labels the old
model's outputs on the old classes are distilled (recorded responses, T = 2, lambda_o = 1 as in the
paper):

    loss = CE(z, y) + lambda_o * KL( softmax(z_old_model / T) || softmax(z[:, :n_old] / T) )

(the paper writes the old-task term as a cross-entropy of the softened distributions; the KL differs
from it by a constant, so the gradient is the same.) The old model is the frozen teacher of the
training loop; ``LwFHook`` computes the term. Use with a teacher that predicts the first
``old_classes`` classes of the data. As in the paper (one head per task), the old task is read
from the old classes' outputs: with a single shared softmax, training on new-class data alone
still pushes the new logits above the old ones (the class-incremental failure LwF does not address).
Not wired into the pipeline yet: the teacher stage requires a teacher that predicts every class of
the data; use ``extend_classifier`` + ``LwFHook`` with ``edgekd.distill.trainer.train``.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.distill.schemes.base import TrainHook
from edgekd.distill.schemes.probe import last_linear


def extend_classifier(model: nn.Module, num_classes: int) -> nn.Module:
    """A copy of ``model`` whose last linear layer predicts ``num_classes`` (old rows kept)."""
    new = copy.deepcopy(model)
    name, old = last_linear(new)
    if num_classes < old.out_features:
        raise ValueError(f"cannot shrink the classifier from {old.out_features} to {num_classes} classes")
    grown = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    with torch.no_grad():
        grown.weight[: old.out_features] = old.weight
        if old.bias is not None:
            grown.bias[: old.out_features] = old.bias
    parent_name, _, attr = name.rpartition(".")
    parent = new.get_submodule(parent_name) if parent_name else new
    setattr(parent, attr, grown)
    if hasattr(new, "arch_spec"):
        new.arch_spec = {**new.arch_spec}
    return new


def lwf_loss(logits: torch.Tensor, old_logits: torch.Tensor, T: float = 2.0) -> torch.Tensor:
    n_old = old_logits.shape[1]
    log_p = F.log_softmax(logits[:, :n_old] / T, dim=1)
    return F.kl_div(log_p, F.log_softmax(old_logits / T, dim=1), reduction="batchmean", log_target=True)


class LwFHook(TrainHook):
    needs_teacher = True

    def __init__(self, T: float = 2.0, weight: float = 1.0):
        super().__init__()
        self.T, self.weight = T, weight

    def terms(self, x, y, idx, logits, teacher_logits, epoch):
        return {"lwf": self.weight * lwf_loss(logits, teacher_logits, self.T)}
