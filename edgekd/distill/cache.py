"""Teacher output cache: the teacher's logits on disk, so later epochs and other runs skip its
forward pass.

Valid only when the teacher's input for sample i is a function of what the key names: the teacher
file (sha256), the data (its fingerprint: content + split settings), the normalisation, and the
augmentation. With augmentation off, the input is the same every epoch: one store serves every
epoch of every run. With augmentation on, the batch iterator draws the crops and flips of epoch e
from ``(seed, e)`` alone (replayable), so the key adds the seed, the augmentation settings and
the epoch: a rerun, a baseline or a sweep over students or methods with the same seed hits.
Any other input pipeline must not use the cache (the distill stage turns it off for views,
feature taps and data-free synthesis).

Each store is one compressed ``.npz`` per key: for every sample index, the top-k logits (values
and class indices, in ``float16`` or ``float32``), the log-mean-exp of the remaining logits (so
the probability mass of the tail is kept at T=1) and a filled flag. With k >= the number of
classes (CIFAR-10, digits: k = 32 by default) the stored logits are the teacher's exactly
(float32) or to float16 precision. Stores are written atomically at the end of each epoch that
added entries.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekd.io import atomic_write, sha256_json

FORMAT = 1


def default_cache_dir() -> Path:
    return Path(os.environ.get("EDGEKD_CACHE_DIR") or Path.home() / ".cache" / "edgekd" / "teacher_outputs")


def cache_key(
    *, teacher_sha256: str, data_fingerprint: str, normalization: Any, augment: dict[str, Any], seed: int, epoch: int
) -> str:
    """sha256 naming one store; the seed and epoch enter only when augmentation is on."""
    augmenting = bool(augment.get("random_crop") and augment.get("padding", 0) > 0) or bool(augment.get("hflip"))
    return sha256_json(
        {
            "format": FORMAT,
            "teacher": teacher_sha256,
            "data": data_fingerprint,
            "normalization": [list(normalization.mean), list(normalization.std)],
            "augment": dict(sorted(augment.items())) if augmenting else None,
            "seed": seed if augmenting else None,
            "epoch": epoch if augmenting else None,
        }
    )


class Store:
    """Top-k logits of ``n`` samples, in memory; ``load`` / ``save`` to one .npz."""

    def __init__(self, n: int, num_classes: int, top_k: int, dtype: str):
        self.k = min(top_k, num_classes)
        self.c = num_classes
        np_dtype = np.float16 if dtype == "float16" else np.float32
        self.values = np.zeros((n, self.k), np_dtype)
        self.indices = np.zeros((n, self.k), np.int16 if num_classes < 32768 else np.int32)
        self.rest = np.zeros(n, np.float32)
        self.filled = np.zeros(n, bool)
        self.dirty = False

    @classmethod
    def load(cls, path: Path, n: int, num_classes: int, top_k: int, dtype: str) -> Store:
        store = cls(n, num_classes, top_k, dtype)
        try:
            with np.load(path) as z:
                if z["values"].shape == store.values.shape and z["values"].dtype == store.values.dtype:
                    store.values, store.indices, store.rest, store.filled = (
                        z["values"],
                        z["indices"],
                        z["rest"],
                        z["filled"],
                    )
        except (OSError, ValueError, KeyError):
            pass  # a missing or unreadable store is an empty one
        return store

    def save(self, path: Path) -> None:
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, values=self.values, indices=self.indices, rest=self.rest, filled=self.filled)

        atomic_write(path, write)
        self.dirty = False

    def put(self, idx: np.ndarray, logits: torch.Tensor) -> None:
        logits = logits.detach().float().cpu()
        top = logits.topk(self.k, dim=1)
        self.values[idx] = top.values.numpy().astype(self.values.dtype)
        self.indices[idx] = top.indices.numpy().astype(self.indices.dtype)
        if self.k < self.c:
            masked = logits.scatter(1, top.indices, float("-inf"))
            self.rest[idx] = (torch.logsumexp(masked, 1) - math.log(self.c - self.k)).numpy()
        self.filled[idx] = True
        self.dirty = True

    def get(self, idx: np.ndarray, device) -> torch.Tensor:
        b = len(idx)
        out = torch.from_numpy(np.repeat(self.rest[idx, None], self.c, axis=1)).float()
        out.scatter_(
            1,
            torch.from_numpy(self.indices[idx].astype(np.int64)),
            torch.from_numpy(self.values[idx].astype(np.float32)),
        )
        return out.view(b, self.c).to(device)


class CachedTeacher(nn.Module):
    """``teacher_fn(x, y, idx, epoch)`` for the training loop: cached logits when every sample of
    the batch is in the store, else the teacher's forward pass (then stored). Counts hits and misses."""

    def __init__(
        self,
        teacher: nn.Module,
        *,
        directory: str | Path | None,
        key_of_epoch,
        n_samples: int,
        num_classes: int,
        top_k: int = 32,
        dtype: str = "float32",
    ):
        super().__init__()
        self.teacher = teacher
        self.dir = Path(directory) if directory else default_cache_dir()
        self.key_of_epoch = key_of_epoch  # epoch -> key
        self.n, self.c, self.top_k, self.dtype = n_samples, num_classes, top_k, dtype
        self.stores: dict[str, Store] = {}
        self.hits = self.misses = 0
        self.teacher_seconds = 0.0

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.npz"

    def store(self, epoch: int) -> tuple[str, Store]:
        key = self.key_of_epoch(epoch)
        if key not in self.stores:
            self.stores = {k: s for k, s in self.stores.items() if s.dirty}  # keep memory to the live one
            self.stores[key] = Store.load(self.path(key), self.n, self.c, self.top_k, self.dtype)
        return key, self.stores[key]

    @torch.no_grad()
    def forward(self, x, y, idx, epoch: int) -> torch.Tensor:
        _, store = self.store(epoch)
        i = idx.cpu().numpy()
        if store.filled[i].all():
            self.hits += len(i)
            return store.get(i, x.device)
        self.misses += len(i)
        logits = self.teacher(x)
        store.put(i, logits)
        return store.get(i, x.device)  # the same (rounded) logits a later hit will give

    def end_epoch(self, epoch: int) -> None:
        for key, store in list(self.stores.items()):
            if store.dirty:
                store.save(self.path(key))

    def stats(self) -> dict[str, Any]:
        total = self.hits + self.misses
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": self.hits / total if total else 0.0,
            "dir": str(self.dir),
        }
