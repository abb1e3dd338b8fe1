"""Calibration: the per-tensor activation range (amax) from statistics over calibration batches.

Four calibrators (the ones TensorRT and NVIDIA's quantization toolkits offer):

- ``max``: the largest |x| seen (NVIDIA Model Optimizer's CNN default; never clips the calibration data);
- ``percentile``: the given percentile of |x| (default 99.99);
- ``entropy``: TensorRT's KL-divergence calibration (a 2048-bin histogram of |x|; the threshold whose
  128-level quantized distribution is closest to the clipped reference);
- ``mse``: the amax that minimises the mean squared quantization error over the histogram.

A :class:`Collector` keeps the exact max and a uniform random subsample of |x| (at most
``max_samples`` values per tensor, reservoir-style per batch), so all four run on one pass.
"""

from __future__ import annotations

import numpy as np
import torch

CALIBRATORS = ("max", "percentile", "entropy", "mse")


class Collector:
    """Running max and a bounded random subsample of |x| for one tensor."""

    def __init__(self, max_samples: int = 1 << 20, seed: int = 0):
        self.max = 0.0
        self.max_samples = max_samples
        self.samples: list[np.ndarray] = []
        self.count = 0
        self.batches = 0
        self.rng = np.random.default_rng(seed)

    def update(self, x: torch.Tensor) -> None:
        a = x.detach().abs().float().flatten().cpu().numpy()
        if a.size == 0:
            return
        self.max = max(self.max, float(a.max()))
        self.batches += 1
        self.count += a.size
        keep = min(a.size, max(1, self.max_samples // 8))  # a share of the budget per batch
        if keep < a.size:
            a = a[self.rng.choice(a.size, size=keep, replace=False)]
        self.samples.append(a)
        total = sum(s.size for s in self.samples)
        if total > self.max_samples:  # thin the pool uniformly so that it stays bounded
            pool = np.concatenate(self.samples)
            self.samples = [pool[self.rng.choice(pool.size, size=self.max_samples, replace=False)]]

    def values(self) -> np.ndarray:
        return np.concatenate(self.samples) if self.samples else np.zeros(1, dtype=np.float32)


def _histogram(values: np.ndarray, top: float, bins: int) -> tuple[np.ndarray, float]:
    hist, _ = np.histogram(values, bins=bins, range=(0.0, top))
    return hist.astype(np.float64), top / bins


def entropy_amax(values: np.ndarray, top: float, bins: int = 2048, levels: int = 128) -> float:
    """TensorRT's entropy calibration: the clip threshold minimising KL(reference || quantized).

    Follows NVIDIA's reference (pytorch-quantization ``_compute_amax_entropy``, the algorithm of
    TensorRT's legacy entropy calibrator): the zero bin is replaced by its neighbour before anything
    else (after a ReLU most of the mass sits at exactly 0, and left alone it swamps the divergence
    and drags the threshold far below the tail the network needs), thresholds run over bins
    ``levels..bins``, ties go to the largest threshold, and the amax is that bin's upper edge.
    """
    hist, width = _histogram(values, top, bins)
    if bins > 1:
        hist[0] = hist[1]
    if hist.sum() == 0:
        return top
    best, best_i = np.inf, bins
    for i in range(levels, bins + 1):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()  # outliers fold into the last kept bin
        nonzero = p > 0
        # merge the i bins into `levels` groups, then spread each group's mass over its non-zero bins
        starts = np.linspace(0, i, levels + 1).astype(int)[:-1]
        sizes = np.diff(np.append(starts, i))
        mass = np.add.reduceat(hist[:i], starts)  # without the outliers, as TensorRT does
        nz_count = np.add.reduceat(nonzero.astype(np.float64), starts)
        q = np.repeat(np.divide(mass, nz_count, out=np.zeros_like(mass), where=nz_count > 0), sizes) * nonzero
        ps, qs = p / p.sum(), q / max(q.sum(), 1e-12)
        mask = nonzero & (qs > 0)
        kl = float(np.sum(ps[mask] * np.log(ps[mask] / qs[mask]))) + (np.inf if np.any(nonzero & (qs == 0)) else 0)
        if kl <= best:
            best, best_i = kl, i
    return best_i * width


def mse_amax(values: np.ndarray, top: float, bins: int = 2048, candidates: int = 100) -> float:
    """The amax in (0, top] that minimises the mean squared error of symmetric INT8 quantization."""
    hist, width = _histogram(values, top, bins)
    centers = (np.arange(bins) + 0.5) * width
    best, best_a = np.inf, top
    for a in np.linspace(top / candidates, top, candidates):
        s = a / 127.0
        q = np.clip(np.round(centers / s), 0, 127) * s
        err = float(np.sum(hist * (centers - q) ** 2))
        if err < best:
            best, best_a = err, float(a)
    return best_a


def compute_amax(collector: Collector, method: str, percentile: float = 99.99) -> float:
    """The calibrated amax of one tensor by ``method`` (one of :data:`CALIBRATORS`)."""
    top = max(collector.max, 1e-8)
    if method == "max":
        return top
    values = collector.values()
    if method == "percentile":
        return max(float(np.percentile(values, percentile)), 1e-8)
    if method == "entropy":
        return max(entropy_amax(values, top), 1e-8)
    if method == "mse":
        return max(mse_amax(values, top), 1e-8)
    raise ValueError(f"unknown calibrator {method!r}; choose one of {', '.join(CALIBRATORS)}")
