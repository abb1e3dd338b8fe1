"""The teacher-guided proxy score of a candidate: a short KD training on a subset of the data.

Every candidate (searched or hand-picked) is trained the same way: from the same seed, with the
same stratified training and validation subsets, for ``search.proxy_epochs`` epochs, with the
loss of the distill stage's default (0.1 * CE + 0.9 * KD at T=4, RepDistiller's recipe) through
the one training loop (``edgekd.distill.trainer.train``). The score is the top-1 accuracy on the
validation subset after the last epoch; the teacher's own accuracy on that subset is measured
once, for the plot.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edgekd.data import DataBundle, Normalization
from edgekd.data.splits import subset_indices, take
from edgekd.distill.config import DistillConfig, MethodConfig
from edgekd.distill.methods import build_method
from edgekd.distill.trainer import TrainSetup, evaluate, train
from edgekd.models import create_model
from edgekd.nas.config import SearchConfig

KD_RECIPE = {"ce_weight": 0.1, "methods": [MethodConfig(name="kd", weight=0.9, params={"T": 4.0})]}


@dataclass
class Proxy:
    """Everything a proxy training needs, built once per search."""

    teacher: nn.Module
    data: DataBundle
    normalization: Normalization
    config: DistillConfig
    seed: int
    device: torch.device
    augment: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        teacher: nn.Module,
        data: DataBundle,
        normalization: Normalization,
        search: SearchConfig,
        seed: int,
        device: torch.device,
        augment: dict[str, Any],
    ) -> Proxy:
        train_split = data.train
        if search.proxy_train_samples is not None:
            train_split = take(train_split, subset_indices(train_split.labels, search.proxy_train_samples, seed))
        val_split = data.val
        if search.proxy_val_samples is not None:
            val_split = take(val_split, subset_indices(val_split.labels, search.proxy_val_samples, seed))
        subset = DataBundle(
            name=data.name,
            train=train_split,
            val=val_split,
            classes=data.classes,
            input_shape=data.input_shape,
            fingerprint=data.fingerprint,
            val_source=data.val_source,
        )
        config = DistillConfig(
            epochs=search.proxy_epochs,
            batch_size=search.proxy_batch_size,
            lr=search.proxy_lr,
            **KD_RECIPE,
        )
        return cls(teacher, subset, normalization, config, seed, device, augment)

    def describe(self) -> dict[str, Any]:
        return {
            "epochs": self.config.epochs,
            "train_samples": len(self.data.train),
            "val_samples": len(self.data.val),
            "batch_size": self.config.batch_size,
            "lr": self.config.lr,
            "loss": "0.1*ce + 0.9*kd(T=4)",
            "score": "top-1 on the validation subset after the last epoch",
        }

    def teacher_top1(self) -> float:
        return evaluate(self.teacher.to(self.device), self.data.val, self.normalization, self.device)["top1"]

    def score(self, spec: dict[str, Any] | str) -> dict[str, Any]:
        """Train ``spec`` from scratch with KD from the teacher; return its proxy metrics."""
        t0 = time.perf_counter()
        torch.manual_seed(self.seed)
        student = create_model(spec, num_classes=len(self.data.classes), in_channels=self.data.input_shape[0])
        methods = [(build_method(m.name, m.params), m.weight) for m in self.config.methods]
        result = train(
            TrainSetup(
                student=student,
                train=self.data.train,
                val=self.data.val,
                normalization=self.normalization,
                config=self.config,
                seed=self.seed,
                device=self.device,
                teacher=self.teacher,
                methods=methods,
                augment=self.augment,
            ),
            label="proxy",
        )
        last = result["history"][-1]
        return {
            "proxy_top1": last["val_top1"],
            "proxy_val_loss": last["val_loss"],
            "train_seconds": round(time.perf_counter() - t0, 3),
        }
