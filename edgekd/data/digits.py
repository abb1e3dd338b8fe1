"""The embedded default dataset: scikit-learn's bundled 8x8 handwritten digits.

1797 grayscale images, values 0..16 scaled to uint8 0..255; it ships inside scikit-learn, so the
default pipeline needs no download and no path. It has no test set: validation is a stratified
``val_fraction`` of the data.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from edgekd.data.bundle import LoadedSource, Split
from edgekd.data.splits import hold_out


def load_digits_source(*, val_fraction: float, seed: int) -> LoadedSource:
    from sklearn.datasets import load_digits

    raw = load_digits()
    pixels = np.rint(np.asarray(raw.data, dtype=np.float64) * 255.0 / 16.0).clip(0, 255).astype(np.uint8)
    images = torch.from_numpy(pixels.reshape(-1, 1, 8, 8).copy())
    labels = torch.from_numpy(np.asarray(raw.target, dtype=np.int64))
    everything = Split(images=images, labels=labels)
    train, val, val_source = hold_out(everything, val_fraction, seed, "data")
    content = [{"images_sha256": _sha256(pixels), "labels_sha256": _sha256(labels.numpy())}]
    return LoadedSource("digits", "digits", train, val, [str(i) for i in range(10)], val_source, content)


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
