"""Quantization-aware distillation: the FP32 model teaches its own fake-quantized copy.

Quantized distillation (Polino et al., "Model compression via distillation and quantization",
ICLR 2018): the loss is ``ce_weight * CE + kd_weight * KD(T)`` with the FP32 student (or, on request,
the original teacher) as the frozen teacher. It runs through the project's one training loop
(``edgekd.distill.trainer.train``), so it checkpoints every epoch and resumes like distillation.
Activation ranges stay at their calibrated values; weight scales follow the weights (per-channel
max at every step), as in NVIDIA's QAT recipe. Defaults follow NVIDIA's guidance
(pytorch-quantization's QAT notes; REFERENCES.md): about 10% of the distillation epochs (at least
one), starting at 1% of its learning rate, cosine annealed. The learning rate matters more than it
looks: the BatchNorm is folded into the weights before QAT, and a network without BN tolerates far
less. Measured on a CIFAR-10 resnet8 (benchmarks/quantization.py): at 10% of the learning rate the
gradients grew 170x in four steps and one epoch of QAT ended at 12% top-1 from 61%; at 1% the
gradient norms stayed flat. On a CIFAR-10 resnet20 (65.5% FP32), one epoch at 10% of the learning
rate ended at 10% top-1 (chance), and so did three epochs at 3% with the resnet32 teacher.

Why fold first rather than keep BatchNorm training during QAT (NVIDIA's recipe; per-channel weight
scales make both give the same INT8 weights once folded): tried on the same resnet20 and a CIFAR
MobileNetV2, one epoch with BN in training mode trains stably at 10% of the learning rate, but it
did not score better than folded QAT at 1% (resnet20 test top-1 65.29% and 64.52% over two seeds
against 65.49%; MobileNetV2 46.79% against 46.74%), so the simpler graph stays. At 8 bits these
networks lose at most a few tenths of a point to calibration alone, which leaves QAT little to win:
trained longer (48,000 images, 20 epochs), the resnet20 (85.73%) lost 0.09-0.14 points to PTQ and
the MobileNetV2 (80.57%) 0.03-0.09, and two epochs of QAT scored below PTQ on held-out images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekd.console import Reporter
from edgekd.data import Normalization, Split
from edgekd.distill.config import DistillConfig, MethodConfig, TapsConfig, TapSites
from edgekd.distill.methods import build_method, method_class
from edgekd.distill.taps import plan_taps, tap_override
from edgekd.distill.trainer import TrainSetup, example_batch, train
from edgekd.quant.graph import QuantizedModel


def qat_config(
    distill: DistillConfig,
    *,
    epochs: int | None = None,
    lr: float | None = None,
    ce_weight: float = 0.1,
    kd_weight: float = 0.9,
    temperature: float = 4.0,
    feature_method: str | None = None,
    feature_weight: float | None = None,
) -> DistillConfig:
    """The distill settings, shortened: ``epochs`` (default ~10% of distill, >= 1), ``lr`` (default 1%);
    the loss CE + KD, plus ``feature_method`` (at its reference weight unless ``feature_weight``)."""
    methods = [MethodConfig(name="kd", weight=kd_weight, params={"T": temperature})]
    if feature_method is not None:
        weight = method_class(feature_method).default_weight if feature_weight is None else feature_weight
        methods.append(MethodConfig(name=feature_method, weight=weight))
    return distill.model_copy(
        update={
            "epochs": int(epochs if epochs is not None else max(1, round(0.1 * distill.epochs))),
            "lr": float(lr if lr is not None else 0.01 * distill.lr),
            "warmup_epochs": 0,
            "schedule": "cosine",
            "ce_weight": ce_weight,
            "methods": methods,
            "baseline": False,
        }
    )


def qat_taps(
    qm: QuantizedModel,
    fp32_model: nn.Module,
    taps: TapsConfig,
    example: torch.Tensor,
    teacher_label: str,
    stages: bool = True,
) -> TapsConfig:
    """Where feature KD reads the two models during QAT. The quantized model's stages are the
    quantizers on the outputs of the FP32 model's stages (found as in distillation, or named in
    ``distill.taps.student``): its traced graph has no block modules to hook. The teacher keeps the
    taps configured for it under ``teacher_label`` (``student`` when the FP32 student teaches)."""
    plan = plan_taps(fp32_model, {"stages"}, taps, example, "student") if stages else None
    return TapsConfig(
        student=TapSites(stages=[qm.output_tap(site.path) for site in plan.stages] if plan else None),
        teacher=TapSites(
            stages=tap_override(taps, "stages", teacher_label), embedding=tap_override(taps, "embedding", teacher_label)
        ),
    )


def quantization_aware_kd(
    qm: QuantizedModel,
    teacher: nn.Module,
    *,
    train_split: Split,
    val_split: Split,
    normalization: Normalization,
    config: DistillConfig,
    seed: int,
    device: torch.device,
    augment: dict[str, Any] | None = None,
    num_workers: int = 0,
    checkpoint_path: Path | None = None,
    resume: bool = False,
    reporter: Reporter | None = None,
    fp32_model: nn.Module | None = None,
    teacher_label: str = "student",
) -> dict[str, Any]:
    """Fine-tune ``qm`` in place with CE + KD (and any feature method of ``config``) from ``teacher``;
    the trainer's result dict. Feature methods need ``fp32_model``, the model ``qm`` was prepared
    from, to find the stages (:func:`qat_taps`)."""
    methods = [(build_method(m.name, m.params), m.weight) for m in config.methods]
    needed = {t for m, _ in methods for t in m.taps}
    if needed - {"logits", "index"}:
        if fp32_model is None:
            raise ValueError("feature KD during QAT needs fp32_model, the model qm was prepared from")
        device_of = next(fp32_model.parameters()).device
        example = example_batch(train_split, normalization, device_of)
        taps = qat_taps(qm, fp32_model, config.taps, example, teacher_label, "stages" in needed)
        config = config.model_copy(update={"taps": taps})
    setup = TrainSetup(
        qm, train_split, val_split, normalization, config, seed, device, teacher, methods, augment or {}, num_workers
    )
    return train(setup, checkpoint_path=checkpoint_path, resume=resume, reporter=reporter, label="qat")


def keep_better(qm: QuantizedModel, ptq_state: dict[str, Any], ptq_top1: float, qat_top1: float) -> str:
    """The quantize stage's choice after QAT: ``"qat"`` unless QAT scored below calibration alone on
    held-out images, in which case the calibrated weights ``ptq_state`` go back into ``qm`` (a short
    QAT can end on a noisy last epoch) and the answer is ``"ptq"``."""
    if qat_top1 < ptq_top1:
        qm.load_state_dict(ptq_state)
        return "ptq"
    return "qat"
