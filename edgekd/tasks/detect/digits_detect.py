"""``digits-detect``: an embedded detection dataset composed from scikit-learn's 8x8 digits.

Each canvas is a dark square holding 1..``max_digits`` digits, each upscaled to a random size and
placed at a random spot with little overlap; the box is the tight box of the digit's lit pixels
and the class is the digit. Train and val canvases use disjoint halves of the 1,797 digit images.
Everything comes from one seed, so the same arguments give the same tensors; no files are read
beyond the digits that ship inside scikit-learn.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from edgekd.tasks.detect.dataset import BoxCounts, DetectionData, DetectionSplit

NAMES = [str(d) for d in range(10)]


def _overlaps(box: list[float], placed: list[list[float]], max_iou: float) -> bool:
    for p in placed:
        iw = max(0.0, min(box[2], p[2]) - max(box[0], p[0]))
        ih = max(0.0, min(box[3], p[3]) - max(box[1], p[1]))
        inter = iw * ih
        union = (box[2] - box[0]) * (box[3] - box[1]) + (p[2] - p[0]) * (p[3] - p[1]) - inter
        if inter / union > max_iou:
            return True
    return False


def _compose(
    digits: np.ndarray,
    targets: np.ndarray,
    n: int,
    canvas: int,
    max_digits: int,
    size_range: tuple[int, int],
    rng: np.random.Generator,
    name: str,
) -> DetectionSplit:
    images, boxes, labels, files = [], [], [], []
    for k in range(n):
        img = np.zeros((canvas, canvas), dtype=np.float32)
        placed: list[list[float]] = []
        cls: list[int] = []
        for _ in range(int(rng.integers(1, max_digits + 1))):
            j = int(rng.integers(len(digits)))
            side = int(rng.integers(size_range[0], size_range[1] + 1))
            glyph = F.interpolate(
                torch.from_numpy(digits[j]).float()[None, None] / 16.0,
                size=(side, side),
                mode="bilinear",
                align_corners=False,
            )[0, 0].numpy()
            ys, xs = np.nonzero(glyph > 0.25)
            tight = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
            for _try in range(20):
                x0, y0 = int(rng.integers(0, canvas - side + 1)), int(rng.integers(0, canvas - side + 1))
                box = [x0 + tight[0], y0 + tight[1], x0 + tight[2], y0 + tight[3]]
                if not _overlaps(box, placed, 0.1):
                    region = img[y0 : y0 + side, x0 : x0 + side]
                    img[y0 : y0 + side, x0 : x0 + side] = np.maximum(region, glyph)
                    placed.append([float(v) for v in box])
                    cls.append(int(targets[j]))
                    break
        tint = rng.uniform(0.6, 1.0, size=3).astype(np.float32)
        noise = rng.normal(0, 0.03, size=(canvas, canvas)).astype(np.float32)
        rgb = np.clip(img + noise, 0, 1)[None] * tint[:, None, None] * 255
        images.append(torch.from_numpy(np.round(rgb).astype(np.uint8)))
        boxes.append(torch.tensor(placed, dtype=torch.float32).reshape(-1, 4))
        labels.append(torch.tensor(cls, dtype=torch.int64))
        files.append(f"{name}_{k:05d}.png")
    return DetectionSplit(name, images, [(canvas, canvas)] * n, boxes, labels, files)


def make_digits_detect(
    n_train: int = 512,
    n_val: int = 128,
    canvas: int = 128,
    max_digits: int = 4,
    size_range: tuple[int, int] = (20, 44),
    seed: int = 0,
) -> DetectionData:
    """Compose the ``digits-detect`` dataset (deterministic in all its arguments)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images, targets = bunch.images, bunch.target
    half = len(images) // 2
    rng = np.random.default_rng(seed)
    train = _compose(images[:half], targets[:half], n_train, canvas, max_digits, size_range, rng, "train")
    val = _compose(images[half:], targets[half:], n_val, canvas, max_digits, size_range, rng, "val")
    return DetectionData(train, val, list(NAMES), list(range(1, 11)), "digits-detect", None, BoxCounts())
