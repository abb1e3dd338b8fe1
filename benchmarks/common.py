"""Helpers shared by the benchmark scripts only (the library's own functions do the work).

The scripts run as ``python benchmarks/NAME.py``, so this folder is on ``sys.path`` and they
``import common`` after putting the repository root there too.
"""

from __future__ import annotations

import torch

from edgekd.distill.trainer import TrainSetup
from edgekd.models import create_model
from edgekd.quant import prepare_int8


def kd_setup(model, data, norm, cfg, seed: int, device, *, teacher=None, methods=(), augment=None) -> TrainSetup:
    """What the trainer gets in the benchmarks: ``model`` on ``data``'s train and val splits,
    distilled from ``teacher`` with ``methods`` (none: cross-entropy alone)."""
    methods = list(methods)
    return TrainSetup(
        model, data.train, data.val, norm, cfg, seed, device, teacher if methods else None, methods, augment or {}
    )


def untrained_int8(arch: str):
    """``arch`` (10 classes, 3x32x32) with untrained weights, BN statistics warmed on noise, then
    calibrated (max) on the same noise: a stand-in for latency only."""
    torch.manual_seed(0)
    model = create_model(arch, num_classes=10).train()
    calib = [torch.randn(32, 3, 32, 32) for _ in range(4)]
    with torch.no_grad():
        for x in calib:
            model(x)
    qm = prepare_int8(model.eval())
    qm.calibrate(calib, "max")
    return qm, calib
