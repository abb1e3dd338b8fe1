"""Helpers shared by the benchmark scripts only (the library's own functions do the work).

The scripts run as ``python benchmarks/NAME.py``, so this folder is on ``sys.path`` and they
``import common`` after putting the repository root there too.
"""

from __future__ import annotations

import numpy as np
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


def paired_bootstrap_difference(
    correct_a, correct_b, n_boot: int = 10000, seed: int = 0, alpha: float = 0.05, chunk: int = 500
) -> dict:
    """Top-1 of model A minus model B in points, with percentile bootstrap bounds over paired test images.

    ``correct_a[i]`` and ``correct_b[i]`` say whether A and B got test image ``i`` right. With
    ``d_i = correct_a[i] - correct_b[i]`` the difference is ``D = 100 * mean(d)``. Each of ``n_boot``
    resamples draws ``n`` image indices with replacement and keeps both models' answers on each drawn
    image (paired: the images, not the models, are what varies), giving ``D*_b = 100 * mean(d[idx_b])``.
    Percentile bootstrap (Efron & Tibshirani 1993, ch. 13): the one-sided ``1 - alpha`` lower bound is
    the ``alpha`` quantile of the ``D*_b``, the two-sided ``1 - alpha`` interval runs from the
    ``alpha / 2`` to the ``1 - alpha / 2`` quantile. Non-inferiority of A to B by a margin ``m``
    points holds at level ``1 - alpha`` when ``lower > -m``.

    Returns ``{"difference", "lower", "interval", "n", "n_boot", "seed", "alpha", "a_only", "b_only"}``
    (``a_only``/``b_only``: images only A / only B gets right; the resampling depends on nothing else).
    """
    a = np.asarray(correct_a, dtype=bool).ravel()
    b = np.asarray(correct_b, dtype=bool).ravel()
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"need two non-empty correctness vectors of one length, got {a.size} and {b.size}")
    if not 0 < alpha < 1 or n_boot < 1:
        raise ValueError(f"need 0 < alpha < 1 and n_boot >= 1, got alpha={alpha}, n_boot={n_boot}")
    d = a.astype(np.int8) - b.astype(np.int8)
    rng = np.random.default_rng(seed)
    boot = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        boot[start : start + k] = d[rng.integers(0, d.size, size=(k, d.size))].mean(axis=1)
    boot *= 100.0
    return {
        "difference": float(100.0 * d.mean()),
        "lower": float(np.quantile(boot, alpha)),
        "interval": [float(np.quantile(boot, alpha / 2)), float(np.quantile(boot, 1 - alpha / 2))],
        "n": int(d.size),
        "n_boot": int(n_boot),
        "seed": int(seed),
        "alpha": float(alpha),
        "a_only": int(np.sum(d == 1)),
        "b_only": int(np.sum(d == -1)),
    }
