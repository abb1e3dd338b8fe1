"""Class-wise self-knowledge distillation (CS-KD; Yun, Park, Lee, Shin, CVPR 2020, "Regularizing
Class-wise Predictions via Self-knowledge Distillation").

For every training sample another sample of the same class is drawn; the network's prediction on
that partner (no gradient) is the soft target for the sample's own prediction:

    loss = CE(s(x), y) + lambda * T^2 * KL( softmax(s(x') / T) || softmax(s(x) / T) ),  y(x') = y(x)

with T = 4 and lambda = 1 as in the paper and the authors' code (which forwards the partners
separately under ``no_grad``, as here). Partners are drawn from ``(seed, epoch)`` and augmented
like the batch, so runs are reproducible and resumable.
"""

from __future__ import annotations

import torch

from edgekd.data.augment import augment_batch
from edgekd.data.batches import SEED_STRIDE
from edgekd.distill.functional import kd
from edgekd.distill.schemes.base import Scheme, SchemeJob, SchemeOutcome, TrainHook, register_scheme, train_by_hooks


class CSKDHook(TrainHook):
    def __init__(self, T: float = 4.0, weight: float = 1.0):
        super().__init__()
        self.T, self.weight = T, weight

    def attach(self, student, setup) -> None:
        super().attach(student, setup)
        self.split, self.norm, self.augment, self.seed = setup.train, setup.normalization, setup.augment, setup.seed
        labels = self.split.labels
        self.by_class = {int(c): torch.nonzero(labels == c).flatten() for c in labels.unique()}
        self._epoch = -1

    def _partners(self, idx: torch.Tensor, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:  # a generator per epoch, independent of the batch generator
            self._gen = torch.Generator().manual_seed(self.seed * SEED_STRIDE + epoch + 7919)
            self._epoch = epoch
        labels = self.split.labels[idx.cpu()]
        out = torch.empty_like(idx.cpu())
        for c in labels.unique().tolist():
            pool = self.by_class[c]
            where = torch.nonzero(labels == c).flatten()
            out[where] = pool[torch.randint(len(pool), (len(where),), generator=self._gen)]
        return out

    def _images(self, idx: torch.Tensor, device) -> torch.Tensor:
        if self.split.images is not None:
            images = self.split.images[idx]
        else:
            images = torch.stack([self.split.dataset[int(i)][0] for i in idx])
        images = images.to(device)
        if self.augment:
            images = augment_batch(images, self._gen, **self.augment)
        return self.norm.normalize(images)

    def terms(self, x, y, idx, logits, teacher_logits, epoch):
        partners = self._partners(idx, epoch)
        with torch.no_grad():
            partner_logits = self.student[0](self._images(partners, x.device))
        return {"cskd": self.weight * kd(logits, partner_logits.detach(), self.T)}


@register_scheme("cskd")
class CSKD(Scheme):
    uses_teacher = False

    def run(self, job: SchemeJob) -> SchemeOutcome:
        c = job.distill.cskd
        student = job.new_student()
        result = train_by_hooks(job, student, [CSKDHook(c.T, c.weight)])
        return SchemeOutcome(student, result, {"cskd": c.model_dump()})
