"""Detection transforms and batches: letterbox to ``imgsz``, flip, scale jitter, optional mosaic.

Geometric augmentation goes through ``torchvision.transforms.v2`` with ``tv_tensors.BoundingBoxes``
so boxes move with the image; boxes pushed out of the canvas are clamped and those left smaller
than 2 px are dropped (``SanitizeBoundingBoxes``). The letterbox keeps the aspect ratio, scales the
long side to ``imgsz`` and pads right/bottom with grey 114, so a box maps back to the original image
by dividing by the one scale factor (``unletterbox``). Models take float images in [0, 1].

Batches are reproducible: the order depends on ``(seed, epoch)`` and each sample's augmentation
on ``(seed, epoch, index)``, drawn inside a forked RNG so the global torch RNG is untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from edgekd.tasks.detect.dataset import DetectionSplit

PAD_VALUE = 114


@dataclass
class Batch:
    images: torch.Tensor  # float32 [B, 3, S, S] in [0, 1]
    targets: list[dict[str, torch.Tensor]]  # per image: boxes [n, 4] xyxy (letterboxed pixels), labels [n]
    indices: list[int]  # positions in the split
    scales: list[float]  # letterbox scale per image (1.0 for mosaic samples, which are not evaluated)


def letterbox(image: torch.Tensor, boxes: torch.Tensor, imgsz: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Resize so the long side is ``imgsz`` (aspect kept) and pad right/bottom to a square."""
    h, w = image.shape[-2:]
    r = imgsz / max(h, w)
    nh, nw = max(1, round(h * r)), max(1, round(w * r))
    out = torch.full((image.shape[0], imgsz, imgsz), PAD_VALUE, dtype=image.dtype)
    out[:, :nh, :nw] = v2.functional.resize(image, [nh, nw], antialias=True) if (nh, nw) != (h, w) else image
    return out, boxes * torch.tensor([nw / w, nh / h, nw / w, nh / h]), r


def unletterbox(boxes: torch.Tensor, scale: float, size: tuple[int, int]) -> torch.Tensor:
    """Letterboxed xyxy pixels back to the original image's pixels (clipped to it); size is (h, w)."""
    out = boxes / scale
    out[..., 0::2] = out[..., 0::2].clamp(0, size[1])
    out[..., 1::2] = out[..., 1::2].clamp(0, size[0])
    return out


def train_augment(hflip: float = 0.5, scale: tuple[float, float] = (0.6, 1.4), translate: float = 0.1) -> v2.Compose:
    """Flip, scale jitter and shift on a letterboxed image; boxes follow, lost ones are dropped."""
    ops: list = []
    if hflip > 0:
        ops.append(v2.RandomHorizontalFlip(p=hflip))
    if scale != (1.0, 1.0) or translate > 0:
        ops.append(v2.RandomAffine(degrees=0.0, translate=(translate, translate), scale=scale, fill=PAD_VALUE))
    ops += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=2.0)]
    return v2.Compose(ops)


def _augmented(split: DetectionSplit, i: int, imgsz: int, aug: v2.Compose) -> tuple[torch.Tensor, dict]:
    img, boxes, _ = letterbox(split.image(i), split.boxes[i], imgsz)
    sample = {
        "image": tv_tensors.Image(img),
        "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(imgsz, imgsz)),
        "labels": split.labels[i],
    }
    out = aug(sample)
    return out["image"].as_subclass(torch.Tensor), {
        "boxes": out["boxes"].as_subclass(torch.Tensor).float(),
        "labels": out["labels"],
    }


def mosaic4(parts: list[tuple[torch.Tensor, dict]], imgsz: int) -> tuple[torch.Tensor, dict]:
    """Tile four ``imgsz`` samples 2x2 at half size into one ``imgsz`` canvas."""
    half = imgsz // 2
    canvas = torch.full((3, imgsz, imgsz), PAD_VALUE, dtype=torch.uint8)
    boxes, labels = [], []
    for k, (img, tgt) in enumerate(parts):
        ox, oy = (k % 2) * half, (k // 2) * half
        canvas[:, oy : oy + half, ox : ox + half] = v2.functional.resize(img, [half, half], antialias=True)
        s = half / imgsz
        boxes.append(tgt["boxes"] * s + torch.tensor([ox, oy, ox, oy], dtype=torch.float32))
        labels.append(tgt["labels"])
    return canvas, {"boxes": torch.cat(boxes), "labels": torch.cat(labels)}


def iterate_batches(
    split: DetectionSplit,
    imgsz: int,
    batch_size: int,
    *,
    train: bool,
    seed: int = 0,
    epoch: int = 0,
    hflip: float = 0.5,
    scale: tuple[float, float] = (0.6, 1.4),
    mosaic: float = 0.0,
) -> Iterator[Batch]:
    """Yield batches; training batches are shuffled and augmented, evaluation batches are letterboxed only."""
    n = len(split)
    order = list(range(n))
    aug = train_augment(hflip, scale) if train else None
    if train:
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(n, generator=g).tolist()
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        images, targets, scales = [], [], []
        for i in idx:
            if not train:
                img, boxes, r = letterbox(split.image(i), split.boxes[i], imgsz)
                images.append(img)
                targets.append({"boxes": boxes, "labels": split.labels[i]})
                scales.append(r)
                continue
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed * 1_000_003 + epoch * 10_007 + i)
                if mosaic > 0 and torch.rand(()) < mosaic:
                    others = torch.randint(n, (3,)).tolist()
                    img, tgt = mosaic4([_augmented(split, j, imgsz, aug) for j in [i, *others]], imgsz)
                else:
                    img, tgt = _augmented(split, i, imgsz, aug)
            images.append(img)
            targets.append(tgt)
            scales.append(1.0)
        yield Batch(torch.stack(images).float() / 255.0, targets, idx, scales)
