"""Contrastive representation distillation (Tian et al., ICLR 2020) on the pooled penultimate
vectors: 128-d projection heads, memory bank (momentum 0.5), NCE at T 0.07; weight 0.8 with CE
weight 1 (RepDistiller). Needs the dataset index of every sample (tap ``index``). CRD+KD: add ``kd``
with weight 1 (RepDistiller's ``-a 1 -b 0.8``).

Negatives: ``nce_k`` unset (the default) keeps the reference's noise ratio K/N = 16384/50000 =
0.328 on any training set (16384 on CIFAR's 50,000 images, 3,277 on 10,000;
``edgekd.distill.crd.scaled_k``); an explicit ``nce_k`` is used as given, clipped to N - 1."""

from __future__ import annotations

import torch

from edgekd.distill.crd import CRDLoss
from edgekd.distill.methods.base import Method


class CRD(Method):
    name = "crd"
    taps = ("embedding", "index")
    default_weight = 0.8
    kind = "contrastive"

    def __init__(self, feat_dim: int = 128, nce_k: int | None = None, nce_t: float = 0.07, nce_m: float = 0.5):
        super().__init__()
        if feat_dim < 1 or (nce_k is not None and nce_k < 1) or nce_t <= 0 or not 0 <= nce_m < 1:
            raise TypeError(
                "need feat_dim >= 1, nce_k >= 1 or unset, nce_t > 0, 0 <= nce_m < 1; "
                f"got {feat_dim}, {nce_k}, {nce_t}, {nce_m}"
            )
        self.feat_dim, self.nce_t, self.nce_m = int(feat_dim), float(nce_t), float(nce_m)
        self.nce_k = None if nce_k is None else int(nce_k)
        self.loss: CRDLoss | None = None

    def bind(self, student, teacher, info) -> None:
        self.loss = CRDLoss(
            student["embedding"].shape[1],
            teacher["embedding"].shape[1],
            info.num_samples,
            info.labels,
            self.feat_dim,
            self.nce_k,
            self.nce_t,
            self.nce_m,
        )

    def forward(self, student, teacher, target, epoch) -> dict[str, torch.Tensor]:
        assert self.loss is not None, "crd: bind() was not called"
        return {"crd": self.loss(student["embedding"], teacher["embedding"], student["index"], target)}
