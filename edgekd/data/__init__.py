"""Datasets for edgekd: the bundled digits, folders of ``.npz`` archives, ImageFolder trees.

``load_data(spec)`` gives a ``DataBundle`` (train/val ``Split``s, class names, input shape and a
fingerprint); ``compute_normalization`` measures channel statistics on the training split; and
``BatchIterator`` yields augmented, normalised batches whose order and augmentation depend only
on ``(seed, epoch)``, so training is reproducible and resumable.
"""

from edgekd.data.augment import augment_batch, augment_kwargs, default_hflip
from edgekd.data.batches import BatchIterator
from edgekd.data.bundle import DataBundle, Split
from edgekd.data.image_folder import skipped_note
from edgekd.data.load import load_data
from edgekd.data.normalization import Normalization, compute_normalization

__all__ = [
    "BatchIterator",
    "DataBundle",
    "Normalization",
    "Split",
    "augment_batch",
    "augment_kwargs",
    "compute_normalization",
    "default_hflip",
    "load_data",
    "skipped_note",
]
