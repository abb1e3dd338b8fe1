"""Sensitivity analysis and mixed precision.

``layer_sensitivity``: the top-1 drop of quantizing each Conv/Linear alone (its weights and the
activations that feed it), everything else in float. ``mixed_precision``: keep the most sensitive
layers in float (FP16 on TensorRT) one at a time until the drop against FP32 is within ``max_drop``.
Both measure top-1 on the given split; the stage records every step in ``quantize/metrics.json``.
"""

from __future__ import annotations

from typing import Any

import torch

from edgekd.data import Normalization, Split
from edgekd.distill.trainer import evaluate
from edgekd.quant.graph import QuantizedModel


def _top1(qm: QuantizedModel, split: Split, norm: Normalization, device: torch.device) -> float:
    return evaluate(qm, split, norm, device)["top1"]


def layer_sensitivity(qm: QuantizedModel, split: Split, norm: Normalization, device: torch.device) -> dict[str, Any]:
    """``{"fp32_top1", "layers": {layer: drop}}`` (drops as fractions, positive = worse), most sensitive first."""
    skipped = list(qm.skipped)
    qm.enable_only(None)
    fp32 = _top1(qm, split, norm, device)
    drops = {}
    for layer in qm.layers:
        qm.enable_only(layer)
        drops[layer] = fp32 - _top1(qm, split, norm, device)
    qm.set_skipped(skipped)
    order = sorted(drops, key=lambda n: -drops[n])
    return {"fp32_top1": fp32, "samples": len(split), "layers": {n: drops[n] for n in order}}


def mixed_precision(
    qm: QuantizedModel,
    split: Split,
    norm: Normalization,
    device: torch.device,
    *,
    fp32_top1: float,
    order: list[str],
    max_drop: float,
) -> dict[str, Any]:
    """Skip layers from ``order`` (most sensitive first) until ``fp32_top1 - top1 <= max_drop``."""
    skipped: list[str] = list(qm.skipped)
    qm.set_skipped(skipped)
    top1 = _top1(qm, split, norm, device)
    steps = [{"skipped": list(skipped), "top1": top1, "drop": fp32_top1 - top1}]
    for layer in order:
        if fp32_top1 - top1 <= max_drop:
            break
        if layer in skipped:
            continue
        skipped.append(layer)
        qm.set_skipped(skipped)
        top1 = _top1(qm, split, norm, device)
        steps.append({"skipped": list(skipped), "top1": top1, "drop": fp32_top1 - top1})
    return {
        "skipped": skipped,
        "top1": top1,
        "drop": fp32_top1 - top1,
        "within_max_drop": fp32_top1 - top1 <= max_drop,
        "steps": steps,
    }
