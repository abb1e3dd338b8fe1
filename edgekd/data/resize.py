"""Resizing in-memory uint8 image tensors to ``image_size`` (shorter side, then centre crop).

The same geometry as ImageFolder decoding (``image_folder.resize_center_crop``), done once at load
time in chunks with antialiased bilinear interpolation. Refuses results that would not fit in a
reasonable amount of memory: large images belong in an ImageFolder tree, decoded lazily.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgekd.errors import EdgekdError

MAX_BYTES = 8 << 30  # refuse to build an in-memory split larger than this


def resize_images(images: torch.Tensor, size: int, *, what: str = "images", chunk: int = 512) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C, size, size); returned unchanged when already that size."""
    n, c, h, w = images.shape
    if (h, w) == (size, size):
        return images
    if n * c * size * size > MAX_BYTES:
        raise EdgekdError(
            f"resizing {n} {what} to {size}x{size} in memory needs {n * c * size * size / 2**30:.1f} GiB; "
            "use a smaller image_size, max_train_samples, or store the images as an ImageFolder tree"
        )
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    top, left = (nh - size) // 2, (nw - size) // 2
    out = torch.empty((n, c, size, size), dtype=torch.uint8)
    for start in range(0, n, chunk):
        x = images[start : start + chunk].float()
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
        out[start : start + chunk] = x[:, :, top : top + size, left : left + size].round().clamp(0, 255)
    return out
