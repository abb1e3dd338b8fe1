"""``BatchIterator``: one epoch of (normalised float32 NCHW images, int64 labels) batches.

Everything random about an epoch (the order, the crops, the flips) comes from one generator
seeded with ``seed * 100003 + epoch``, so iterating epoch k gives the same batches whether the run
got there directly or was resumed. Under DDP (``world_size > 1``) every rank draws the same
permutation and takes its strided share: training shares are padded (or, with ``drop_last``,
trimmed) to equal length so all ranks step together; evaluation (``shuffle=False``, no
``drop_last``) splits the data exactly, so summed counts equal the split size.

With ``with_index=True`` each batch also carries the dataset indices of its images (an int64
tensor on ``device``), for methods that keep per-sample state (CRD's memory bank).

In-memory splits are indexed directly; lazy ones (ImageFolder) are decoded by a ``DataLoader``
with ``num_workers`` processes, in the order drawn here, and augmented the same way afterwards.
On CUDA, host batches are pinned (page-locked) and copied with ``non_blocking=True``, so the copy
overlaps the previous step's kernels.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader

from edgekd.data.augment import augment_batch, default_hflip
from edgekd.data.bundle import Split
from edgekd.data.normalization import Normalization
from edgekd.errors import EdgekdError

SEED_STRIDE = 100003  # epoch generators are seeded with seed * SEED_STRIDE + epoch


class BatchIterator:
    """Iterate ``(x, y)``: x float32 (B, C, H, W) normalised, y int64 (B,), both on ``device``."""

    def __init__(
        self,
        split: Split,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int,
        epoch: int = 0,
        normalization: Normalization,
        random_crop: bool = False,
        padding: int = 4,
        hflip: bool | None = False,
        drop_last: bool = False,
        device: str | torch.device = "cpu",
        num_workers: int = 0,
        rank: int = 0,
        world_size: int = 1,
        with_index: bool = False,
    ):
        if batch_size < 1:
            raise EdgekdError(f"batch_size must be at least 1, got {batch_size}")
        if padding < 0:
            raise EdgekdError(f"augmentation padding must be 0 or more pixels, got {padding}")
        if num_workers < 0:
            raise EdgekdError(f"num_workers must be 0 or more, got {num_workers}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1} (world_size {world_size})")
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = epoch
        self.normalization = normalization
        self.random_crop = random_crop
        self.padding = padding
        self.hflip = default_hflip((len(normalization.mean),)) if hflip is None else bool(hflip)
        self.drop_last = drop_last
        self.device = torch.device(device)
        self.num_workers = num_workers
        self.rank = rank
        self.world_size = world_size
        self.with_index = with_index
        if drop_last and len(split) > 0 and len(self) == 0:
            raise EdgekdError(
                f"batch_size {batch_size} is larger than the {self._share_size()} images available "
                f"per process ({len(split)} in all); lower batch_size or use more data"
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @classmethod
    def training(
        cls, split: Split, batch_size: int, seed: int, epoch: int, normalization: Normalization, **kwargs: Any
    ) -> BatchIterator:
        """The batches of one training epoch: shuffled by (``seed``, ``epoch``), the last short batch
        dropped; ``kwargs`` as for the constructor (augmentation, device, ranks ...)."""
        return cls(
            split,
            batch_size,
            shuffle=True,
            seed=seed,
            epoch=epoch,
            normalization=normalization,
            drop_last=True,
            **kwargs,
        )

    def __len__(self) -> int:
        n = self._share_size()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        generator = torch.Generator().manual_seed(self.seed * SEED_STRIDE + self.epoch)
        n = len(self.split)
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        indices = self._rank_share(order)
        if self.split.images is not None:
            batches = self._memory_batches(indices)
        else:
            batches = self._lazy_batches(indices)
        pin = self.device.type == "cuda"  # page-locked host memory: the copies below run asynchronously
        for i, (images, labels) in enumerate(batches):
            if pin and images.device.type == "cpu" and not images.is_pinned():
                images, labels = images.pin_memory(), labels.pin_memory()
            images = images.to(self.device, non_blocking=True)
            images = augment_batch(
                images, generator, random_crop=self.random_crop, padding=self.padding, hflip=self.hflip
            )
            batch = (self.normalization.normalize(images), labels.to(self.device, non_blocking=True))
            if self.with_index:
                batch += (indices[i * self.batch_size : (i + 1) * self.batch_size].to(self.device, non_blocking=True),)
            yield batch

    def _share_size(self) -> int:
        n, ws = len(self.split), self.world_size
        if ws == 1:
            return n
        if self.drop_last:
            return n // ws
        if self.shuffle:
            return math.ceil(n / ws)
        return len(range(self.rank, n, ws))

    def _rank_share(self, order: torch.Tensor) -> torch.Tensor:
        n, ws = len(order), self.world_size
        if ws == 1:
            return order
        if self.drop_last:
            order = order[: (n // ws) * ws]
        elif self.shuffle and n % ws:
            total = math.ceil(n / ws) * ws
            order = order.repeat(math.ceil(total / n))[:total]
        return order[self.rank :: ws]

    def _memory_batches(self, indices: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        images, labels = self.split.images, self.split.labels
        assert images is not None
        for i in range(len(self)):
            idx = indices[i * self.batch_size : (i + 1) * self.batch_size]
            yield images[idx.to(images.device)], labels[idx.to(labels.device)]

    def _lazy_batches(self, indices: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        assert self.split.dataset is not None
        loader = DataLoader(
            self.split.dataset,
            batch_size=self.batch_size,
            sampler=indices.tolist(),
            drop_last=self.drop_last,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        yield from loader
