"""Sensitivity analysis and mixed precision, for any quality score (top-1 for a classifier, mAP for a
detector).

``layer_sensitivity``: the score drop of quantizing each Conv/Linear alone (its weights and the
activations that feed it), everything else in float. ``mixed_precision``: keep the most sensitive
layers in float (FP16 on TensorRT) one at a time until the drop against FP32 is within ``max_drop``.
``score()`` evaluates the model in its current quantization state on held-out images (higher is
better); the quantize stages record every step in ``quantize/metrics.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgekd.quant.graph import QuantizedModel


def layer_sensitivity(qm: QuantizedModel, score: Callable[[], float], samples: int | None = None) -> dict[str, Any]:
    """``{"fp32", "samples", "layers": {layer: drop}}`` (drops in score units, positive = worse), most
    sensitive first; ``qm``'s quantization state is restored afterwards."""
    skipped = list(qm.skipped)
    qm.enable_only(None)
    fp32 = score()
    drops = {}
    try:
        for layer in qm.layers:
            qm.enable_only(layer)
            drops[layer] = fp32 - score()
    finally:
        qm.set_skipped(skipped)
    order = sorted(drops, key=lambda n: -drops[n])
    return {"fp32": fp32, "samples": samples, "layers": {n: drops[n] for n in order}}


def mixed_precision(
    qm: QuantizedModel, score: Callable[[], float], *, fp32: float, order: list[str], max_drop: float
) -> dict[str, Any]:
    """Skip layers from ``order`` (most sensitive first) until ``fp32 - score() <= max_drop``; ``qm``
    is left with those layers in float."""
    skipped: list[str] = list(qm.skipped)
    qm.set_skipped(skipped)
    value = score()
    steps = [{"skipped": list(skipped), "score": value, "drop": fp32 - value}]
    for layer in order:
        if fp32 - value <= max_drop:
            break
        if layer in skipped:
            continue
        skipped.append(layer)
        qm.set_skipped(skipped)
        value = score()
        steps.append({"skipped": list(skipped), "score": value, "drop": fp32 - value})
    return {
        "skipped": skipped,
        "score": value,
        "drop": fp32 - value,
        "within_max_drop": fp32 - value <= max_drop,
        "steps": steps,
    }
