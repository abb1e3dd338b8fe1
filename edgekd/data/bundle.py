"""The data containers every stage receives: a ``Split`` of images and labels, and a ``DataBundle``.

A split is either in memory (a uint8 NCHW tensor, for the bundled digits and ``.npz`` folders) or
lazy (a torch ``Dataset`` that decodes one image at a time, for ImageFolder trees). Both carry
their labels as an int64 tensor, so splitting, subsetting and counting never decode an image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset


@dataclass
class Split:
    """One set of labelled images; ``images`` (in memory) or ``dataset`` (lazy) is set, not both."""

    images: torch.Tensor | None  # uint8 (N, C, H, W); None for lazy sources
    labels: torch.Tensor  # int64 (N,)
    # Lazy sources: item i is (uint8 CHW tensor, int label), label equal to labels[i].
    dataset: Dataset | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def lazy(self) -> bool:
        return self.images is None


@dataclass
class DataBundle:
    """A loaded data source: train and validation splits plus what identifies them."""

    name: str  # "digits" or the resolved path
    train: Split
    val: Split
    classes: list[str]
    input_shape: tuple[int, int, int]  # (C, H, W)
    fingerprint: str  # sha256 of the source content + split settings (for caching and resume)
    val_source: str  # e.g. "test.npz" or "20% of train, stratified, seed 0"
    skipped: list[str] = field(default_factory=list)  # unreadable images left out (data.bad_images=skip)


@dataclass
class LoadedSource:
    """What a source loader hands to ``load_data`` before subsetting and fingerprinting."""

    kind: str  # "digits", "npz" or "imagefolder"
    name: str
    train: Split
    val: Split
    classes: list[str]
    val_source: str
    content: list[Any] = field(default_factory=list)  # JSON-able items that identify the content
    skipped: list[str] = field(default_factory=list)  # unreadable images left out (data.bad_images=skip)
