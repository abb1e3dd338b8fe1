"""An ImageFolder tree: one subfolder of images per class, decoded lazily with PIL.

Two layouts are accepted::

    ROOT/CLASS/*.png                       one pool; validation is a stratified val_fraction of it
    ROOT/train/CLASS/*.png + ROOT/val/...  (or ROOT/test/...) separate training and validation sets

Images are converted to RGB, their shorter side resized to ``image_size`` and centre-cropped to a
square, and returned as uint8 CHW tensors, so batches go through the same augmentation and
normalisation as in-memory sources. Scanning reads names and sizes only, never pixels.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from edgekd.data.bundle import LoadedSource, Split
from edgekd.data.splits import hold_out
from edgekd.errors import EdgekdError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
VAL_DIRS = ("val", "test")  # the first one present is the validation split
DEFAULT_IMAGE_SIZE = 224


class ImageFileDataset(Dataset):
    """Item i: (uint8 (3, S, S) tensor, label) decoded from ``paths[i]``; picklable for workers."""

    def __init__(self, paths: list[str], labels: list[int], image_size: int):
        self.paths = paths
        self.labels = labels
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path = self.paths[i]
        try:
            with Image.open(path) as im:
                rgb = im.convert("RGB")
        except (OSError, ValueError) as err:
            raise EdgekdError(f"cannot decode image {path} ({err}); remove or replace the file") from None
        pixels = np.asarray(resize_center_crop(rgb, self.image_size), dtype=np.uint8)
        return torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous(), self.labels[i]


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is ``size`` (bilinear), then crop the central ``size`` square."""
    w, h = image.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        image = image.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    return image.crop((left, top, left + size, top + size))


def is_image_folder(root: Path) -> bool:
    """True when some non-hidden subfolder of ``root`` holds an image (at any depth); stops at the first."""
    try:
        entries = list(os.scandir(root))
    except OSError:
        return False
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        for _, dirnames, filenames in os.walk(entry.path, followlinks=True):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            if any(not n.startswith(".") and n.lower().endswith(IMG_EXTENSIONS) for n in filenames):
                return True
    return False


def load_image_folder_source(root: Path, *, val_fraction: float, seed: int, image_size: int | None) -> LoadedSource:
    size = image_size or DEFAULT_IMAGE_SIZE
    train_dir = root / "train"
    split_layout = train_dir.is_dir() and bool(_scan(train_dir))
    if split_layout:
        train_files = _scan(train_dir)
        val_dir = next((root / d for d in VAL_DIRS if (root / d).is_dir()), None)
    else:
        train_dir, train_files, val_dir = root, _scan(root), None
    if not train_files:
        raise EdgekdError(f"{root} has no class subfolders with images ({', '.join(IMG_EXTENSIONS)}); {_HINT}")
    classes = sorted(train_files)

    train = _split(train_files, classes, size)
    content = _listing(root, train_files)
    if val_dir is not None:
        val_files = _scan(val_dir)
        if not val_files:
            raise EdgekdError(f"{val_dir} has no class subfolders with images; {_HINT}")
        unknown = sorted(set(val_files) - set(classes))
        if unknown:
            raise EdgekdError(
                f"{val_dir} has class folder(s) {', '.join(unknown[:5])} that {train_dir} lacks; "
                "validation classes must be a subset of the training classes"
            )
        val = _split(val_files, classes, size)
        content += _listing(root, val_files)
        val_source = f"{val_dir.name}/ folder"
    else:
        train, val, val_source = hold_out(train, val_fraction, seed, "train" if split_layout else "images")
    return LoadedSource("imagefolder", str(root), train, val, classes, val_source, content)


_HINT = "expected ROOT/CLASS/image files, or ROOT/train/CLASS/... with ROOT/val/CLASS/... (or test/)"


def _scan(folder: Path) -> dict[str, list[tuple[str, int]]]:
    """Class name -> sorted [(image path, bytes)] for each non-hidden subfolder that holds images."""
    out: dict[str, list[tuple[str, int]]] = {}
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return out
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        files = sorted(_images_under(entry.path))
        if files:
            out[entry.name] = files
    return out


def _images_under(folder: str) -> list[tuple[str, int]]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS):
                path = os.path.join(dirpath, name)
                found.append((path, os.path.getsize(path)))
    return found


def _split(files: dict[str, list[tuple[str, int]]], classes: list[str], size: int) -> Split:
    index = {c: i for i, c in enumerate(classes)}
    paths = [p for c in sorted(files) for p, _ in files[c]]
    labels = [index[c] for c in sorted(files) for _ in files[c]]
    dataset = ImageFileDataset(paths, labels, size)
    return Split(images=None, labels=torch.tensor(labels, dtype=torch.int64), dataset=dataset)


def _listing(root: Path, files: dict[str, list[tuple[str, int]]]) -> list[list[object]]:
    return [[os.path.relpath(p, root), n] for c in sorted(files) for p, n in files[c]]
