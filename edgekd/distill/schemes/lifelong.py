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

In the pipeline (``--scheme lifelong``): the teacher is the old model and predicts the first N of
the data's classes; the student is that model with its classifier grown to all the classes (so
``--student`` and the search do not apply), trained with CE on the data's labels plus the LwF term.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.data import Split
from edgekd.distill.schemes.base import Scheme, SchemeJob, SchemeOutcome, TrainHook, register_scheme, train_by_hooks
from edgekd.distill.schemes.probe import last_linear
from edgekd.errors import EdgekdError


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
        new.arch_spec = {**new.arch_spec, "num_classes": num_classes}
    for p in new.parameters():  # the old model may arrive frozen (a teacher)
        p.requires_grad_(True)
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


@register_scheme("lifelong")
class Lifelong(Scheme):
    """The teacher (the old model) grown to the data's classes, trained with CE + the LwF term."""

    def run(self, job: SchemeJob) -> SchemeOutcome:
        old = job.teacher
        if getattr(old, "arch_spec", None) is None:
            raise EdgekdError(
                "scheme lifelong grows the teacher itself, so the teacher must carry its architecture; "
                "pass an edgekd checkpoint or --teacher-arch"
            )
        n_new = len(job.data.classes)
        student = extend_classifier(old, n_new)
        n_old = last_linear(old)[1].out_features
        lwf = job.distill.lifelong
        result = train_by_hooks(job, student, [LwFHook(lwf.T, lwf.weight)], teacher=old)  # CE + lambda_o * LwF
        old_val = old_class_split(job.data.val, n_old)
        info = {
            "old_classes": n_old,
            "new_classes": n_new - n_old,
            "T": lwf.T,
            "weight": lwf.weight,
            "old_task_val_samples": len(old_val),
            "teacher_old_task_top1": old_task_top1(old, old_val, job.normalization, job.device, n_old),
            "student_old_task_top1": old_task_top1(student, old_val, job.normalization, job.device, n_old),
        }
        return SchemeOutcome(student, result, {"lifelong": info})


def old_class_split(split: Split, n_old: int) -> Split:
    """The samples of the first ``n_old`` classes (the old task)."""
    from edgekd.data.splits import take

    return take(split, (split.labels < n_old).nonzero().flatten().numpy())


@torch.no_grad()
def old_task_top1(model: nn.Module, split: Split, norm, device, n_old: int, batch_size: int = 256) -> float:
    """Top-1 on the old task, read from the first ``n_old`` outputs (LwF's multi-head evaluation)."""
    from edgekd.data import BatchIterator

    model = model.to(device).eval()
    correct = seen = 0
    for x, y in BatchIterator(split, batch_size, shuffle=False, seed=0, normalization=norm, device=device):
        correct += int((model(x)[:, :n_old].argmax(1) == y).sum())
        seen += int(y.numel())
    return correct / max(seen, 1)
