"""Per-channel mean/std normalisation, measured on the training split.

Statistics are in [0, 1] pixel units (uint8 / 255), like torchvision's ``Normalize``, so they can
be written into exported models and deployment bundles as they are. They are measured on an evenly
spaced, deterministic sample of at most ``max_samples`` training images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Subset

from edgekd.data.bundle import Split
from edgekd.errors import EdgekdError

MIN_STD = 1e-6  # a constant channel gets std 1.0 instead of a division by ~0


@dataclass
class Normalization:
    mean: list[float]  # per channel, [0, 1] pixel units
    std: list[float]

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> float32 ``(x / 255 - mean) / std`` on the images' device."""
        c = images.shape[1]
        if c != len(self.mean):
            raise EdgekdError(
                f"images have {c} channel(s) but the normalisation has {len(self.mean)}; "
                "use data with the channel count the model was trained on"
            )
        mean = torch.tensor(self.mean, dtype=torch.float32, device=images.device).view(1, c, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=images.device).view(1, c, 1, 1)
        return images.to(torch.float32).div_(255.0).sub_(mean).div_(std)


def compute_normalization(split: Split, max_samples: int = 10000) -> Normalization:
    """Channel mean and std of (up to) ``max_samples`` evenly spaced images of ``split``."""
    n = len(split)
    if n == 0:
        raise EdgekdError("cannot compute normalisation statistics of an empty split; add training images")
    k = min(n, max(1, max_samples))
    index = torch.linspace(0, n - 1, k).round().long().unique()
    total = sq = None
    count = 0
    for batch in _batches(split, index):
        x = batch.to(torch.float64).div_(255.0)
        s, q = x.sum(dim=(0, 2, 3)), x.square().sum(dim=(0, 2, 3))
        total, sq = (s, q) if total is None else (total + s, sq + q)
        count += x.shape[0] * x.shape[2] * x.shape[3]
    assert total is not None and sq is not None
    mean = total / count
    std = (sq / count - mean.square()).clamp_min(0.0).sqrt()
    std = torch.where(std < MIN_STD, torch.ones_like(std), std)
    return Normalization(mean=[float(v) for v in mean], std=[float(v) for v in std])


def _batches(split: Split, index: torch.Tensor, size: int = 1024):
    if split.images is not None:
        for start in range(0, len(index), size):
            yield split.images[index[start : start + size].to(split.images.device)]
        return
    assert split.dataset is not None
    loader = DataLoader(Subset(split.dataset, index.tolist()), batch_size=64, shuffle=False)
    for images, _ in loader:
        yield images
