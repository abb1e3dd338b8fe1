"""The in-memory form of a detection dataset (``DetectionData`` of two ``DetectionSplit``s) and the
box check every loader applies (``sanitize_boxes``). The loaders (coco.py, yolo.py, digits_detect.py)
build these; data.py picks the loader.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from edgekd.errors import EdgekdError


@dataclass
class BoxCounts:
    """How many boxes the loader had to fix: clipped to the image, or dropped as degenerate."""

    clipped: int = 0
    dropped: int = 0


@dataclass
class DetectionSplit:
    """One split: per image a source (path or uint8 ``[3,H,W]``), its size, boxes and labels."""

    name: str
    images: list[Path | torch.Tensor]
    sizes: list[tuple[int, int]]  # (height, width)
    boxes: list[torch.Tensor]  # float32 [N, 4] xyxy, pixels of the original image
    labels: list[torch.Tensor]  # int64 [N], 0..C-1
    file_names: list[str]

    def __len__(self) -> int:
        return len(self.images)

    def image(self, i: int) -> torch.Tensor:
        """The i-th image as uint8 ``[3, H, W]`` (decoded from disk when it is a path)."""
        src = self.images[i]
        if isinstance(src, torch.Tensor):
            return src
        from torchvision.io import ImageReadMode, decode_image

        try:
            return decode_image(str(src), mode=ImageReadMode.RGB)
        except RuntimeError as err:
            raise EdgekdError(f"cannot decode image {src}: {err}; replace or remove the file") from err

    def subset(self, n: int) -> DetectionSplit:
        """The first ``n`` images (for quick checks)."""
        return DetectionSplit(
            self.name, self.images[:n], self.sizes[:n], self.boxes[:n], self.labels[:n], self.file_names[:n]
        )

    def num_boxes(self) -> int:
        return sum(len(b) for b in self.boxes)


@dataclass
class DetectionData:
    """A detection dataset: train/val splits, class names, the dataset's own category ids."""

    train: DetectionSplit
    val: DetectionSplit
    names: list[str]
    category_ids: list[int]
    source: str  # "coco", "yolo" or "digits-detect"
    root: str | None = None
    counts: BoxCounts = field(default_factory=BoxCounts)

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def summary(self) -> str:
        return (
            f"{self.source}: {len(self.names)} classes, train {len(self.train)} images / "
            f"{self.train.num_boxes()} boxes, val {len(self.val)} images / {self.val.num_boxes()} boxes"
        )


def sanitize_boxes(
    boxes: torch.Tensor, height: int, width: int, counts: BoxCounts, min_size: float = 1e-3, tol: float = 0.01
) -> torch.Tensor:
    """Clip xyxy boxes to the image and return the keep mask; update ``counts`` in place.

    A box with any coordinate outside ``[0, W] x [0, H]`` is clipped; it is counted when a corner
    moved by more than ``tol`` pixels (YOLO's 6-decimal rounding moves edges by ~3e-4 px). A box
    whose width or height is below ``min_size`` pixels after clipping is dropped (counted).
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.bool)
    clipped = boxes.clone()
    clipped[:, 0::2] = clipped[:, 0::2].clamp(0, width)
    clipped[:, 1::2] = clipped[:, 1::2].clamp(0, height)
    keep = ((clipped[:, 2] - clipped[:, 0]) >= min_size) & ((clipped[:, 3] - clipped[:, 1]) >= min_size)
    changed = ((clipped - boxes).abs().amax(dim=1) > tol) & keep
    counts.clipped += int(changed.sum())
    counts.dropped += int((~keep).sum())
    boxes.copy_(clipped)
    return keep
