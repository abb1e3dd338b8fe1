"""Batch augmentation on uint8 NCHW tensors: random crop with zero padding, horizontal flip.

Done on whole batches with tensor ops (on whatever device the batch is on), with every random draw
taken on the CPU from the caller's ``torch.Generator``. The iterator seeds that generator from
``(seed, epoch)``, so a resumed run augments exactly as an uninterrupted one, on any device.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def augment_kwargs(config: Any, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """``BatchIterator`` arguments from an augmentation config (``random_crop``, ``padding``,
    ``hflip``); ``None`` settings resolve from the image shape: flip colour images only, pad by
    1/8 of the side (4 px at 32x32, as the CIFAR recipes do; 1 px on 8x8 digits)."""
    hflip = default_hflip(input_shape) if config.hflip is None else bool(config.hflip)
    padding = max(1, round(int(input_shape[-1]) / 8)) if config.padding is None else int(config.padding)
    return {"random_crop": bool(config.random_crop), "padding": padding, "hflip": hflip}


def default_hflip(input_shape: tuple[int, ...]) -> bool:
    """Flip colour (3-channel) images; never flip grayscale ones (digits read differently mirrored)."""
    return int(input_shape[0]) == 3


def augment_batch(
    images: torch.Tensor, generator: torch.Generator, *, random_crop: bool, padding: int, hflip: bool
) -> torch.Tensor:
    """Randomly crop (after zero-padding by ``padding``) and/or flip each image of a uint8 batch."""
    if random_crop and padding > 0:
        images = random_crop_batch(images, padding, generator)
    if hflip:
        images = random_hflip_batch(images, generator)
    return images


def random_crop_batch(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Per-image random HxW window of the zero-padded batch, gathered in one indexing op."""
    b, c, h, w = images.shape
    offsets = torch.randint(0, 2 * padding + 1, (b, 2), generator=generator).to(images.device)
    padded = F.pad(images, (padding, padding, padding, padding))
    rows = offsets[:, 0:1] + torch.arange(h, device=images.device)  # (B, H)
    cols = offsets[:, 1:2] + torch.arange(w, device=images.device)  # (B, W)
    bi = torch.arange(b, device=images.device).view(b, 1, 1, 1)
    ci = torch.arange(c, device=images.device).view(1, c, 1, 1)
    return padded[bi, ci, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]


def random_hflip_batch(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 0.5."""
    flip = (torch.rand(images.shape[0], generator=generator) < 0.5).to(images.device)
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(3), images)
