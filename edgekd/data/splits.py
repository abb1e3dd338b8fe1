"""Deterministic index selection: a stratified hold-out for validation and a training subset.

Both go through scikit-learn's ``train_test_split`` with ``stratify`` so every class keeps its share;
when stratification is impossible (a class with a single image, fewer held-out images than classes)
they fall back to a plain seeded shuffle and say so, rather than failing on small data.
scikit-learn is imported on first use, keeping ``import edgekd.data`` (and the CLI) quick.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Subset

from edgekd.data.bundle import Split
from edgekd.errors import EdgekdError


def holdout_indices(labels: torch.Tensor, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Split ``range(len(labels))`` into (kept, held out, stratified?); both index arrays sorted."""
    from sklearn.model_selection import train_test_split  # imported here: it takes ~1 s

    n = int(labels.shape[0])
    if n < 2:
        raise EdgekdError(
            f"cannot hold out a validation set from {n} training image(s); add images or provide a "
            "separate validation set (test.npz / val.npz, or a val/ folder)"
        )
    idx = np.arange(n)
    y = labels.numpy()
    try:
        kept, held = train_test_split(idx, test_size=fraction, stratify=y, random_state=seed)
        stratified = True
    except ValueError:
        try:
            kept, held = train_test_split(idx, test_size=fraction, random_state=seed)
        except ValueError as err:
            raise EdgekdError(
                f"cannot hold out val_fraction={fraction} of {n} training images ({err}); change "
                "val_fraction or provide a separate validation set"
            ) from None
        stratified = False
    return np.sort(kept), np.sort(held), stratified


def subset_indices(labels: torch.Tensor, n_keep: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded, class-stratified subset of ``n_keep`` items (all if fewer exist)."""
    n = int(labels.shape[0])
    if n_keep >= n:
        return np.arange(n)
    from sklearn.model_selection import train_test_split

    idx = np.arange(n)
    try:
        kept, _ = train_test_split(idx, train_size=n_keep, stratify=labels.numpy(), random_state=seed)
    except ValueError:
        kept = np.random.default_rng(seed).permutation(n)[:n_keep]
    return np.sort(kept)


def take(split: Split, indices: np.ndarray) -> Split:
    """The items of ``split`` at ``indices`` (a copy for in-memory splits, a view for lazy ones)."""
    index = torch.from_numpy(np.asarray(indices, dtype=np.int64))
    labels = split.labels[index]
    if split.images is not None:
        return Split(images=split.images[index], labels=labels)
    assert split.dataset is not None
    return Split(images=None, labels=labels, dataset=Subset(split.dataset, index.tolist()))


def hold_out(split: Split, fraction: float, seed: int, of: str) -> tuple[Split, Split, str]:
    """``split`` as (train, validation, the ``val_source`` text): ``fraction`` of it held out, seeded
    and stratified where possible; ``of`` names ``split`` in the text."""
    kept, held, stratified = holdout_indices(split.labels, fraction, seed)
    return take(split, kept), take(split, held), describe_holdout(fraction, of, seed, stratified)


def describe_holdout(fraction: float, of: str, seed: int, stratified: bool) -> str:
    """The ``val_source`` text of a hold-out, e.g. ``"20% of train, stratified, seed 0"``."""
    how = "stratified" if stratified else "not stratified (too few images per class)"
    return f"{fraction * 100:g}% of {of}, {how}, seed {seed}"
