"""An ImageFolder tree: one subfolder of images per class, decoded lazily with PIL.

Two layouts are accepted::

    ROOT/CLASS/*.png                       one pool; validation is a stratified val_fraction of it
    ROOT/train/CLASS/*.png + ROOT/val/...  (or ROOT/test/...) separate training and validation sets

Images are converted to RGB (grayscale, palette and 16-bit ones included), their shorter side resized
to ``image_size`` and centre-cropped to a square, and returned as uint8 CHW tensors, so batches go
through the same augmentation and normalisation as in-memory sources.

Loading decodes every image once (JPEGs at 1/8 scale, which still reads every block), so a corrupt
or truncated file is found before training rather than in the middle of an epoch: ``bad_images``
"fail" (the default) stops on the first one, naming it; "skip" leaves such files out, counts them,
and lists them in the source's content, so the data fingerprint changes with what was skipped.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

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
                rgb = to_rgb(im)
        except (OSError, ValueError) as err:
            raise EdgekdError(f"cannot decode image {path} ({err}); remove or replace the file") from None
        pixels = np.asarray(resize_center_crop(rgb, self.image_size), dtype=np.uint8)
        return torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous(), self.labels[i]


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with 16- and 32-bit grayscale scaled to 8 bits (PIL's own conversion clips them at 255)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        wide = np.asarray(image).astype(np.int64)
        shift = 8 if image.mode.startswith("I;16") else 24
        image = Image.fromarray((np.clip(wide, 0, None) >> shift).astype(np.uint8), mode="L")
    return image.convert("RGB")


def decode_error(path: str) -> str | None:
    """Why PIL cannot decode ``path`` (None when it can); JPEGs are decoded at 1/8 scale (``draft``)."""
    try:
        with Image.open(path) as im:
            im.draft("RGB", (1, 1))
            im.load()
    except (OSError, ValueError, SyntaxError) as err:  # PIL raises SyntaxError for some broken headers
        return str(err) or type(err).__name__
    return None


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


BadImages = Literal["fail", "skip"]


def load_image_folder_source(
    root: Path, *, val_fraction: float, seed: int, image_size: int | None, bad_images: BadImages = "fail"
) -> LoadedSource:
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
    skipped: list[str] = []
    train_files = _readable(train_files, bad_images, skipped)

    train = _split(train_files, classes, size)
    content = _listing(root, train_files)
    if val_dir is not None:
        val_files = _readable(_scan(val_dir), bad_images, skipped)
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
    if skipped:
        content.append({"skipped": sorted(os.path.relpath(p, root) for p in skipped)})
    return LoadedSource("imagefolder", str(root), train, val, classes, val_source, content, skipped)


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


def skipped_note(skipped: list[str]) -> str:
    """The one line that says how many images ``bad_images="skip"`` left out."""
    return f"data: left out {len(skipped)} image(s) that cannot be decoded (data.bad_images=skip), first {skipped[0]}"


def _readable(
    files: dict[str, list[tuple[str, int]]], bad_images: BadImages, skipped: list[str]
) -> dict[str, list[tuple[str, int]]]:
    """``files`` less those PIL cannot decode (appended to ``skipped``); with "fail", the first one is an error."""
    every = [p for c in sorted(files) for p, _ in files[c]]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # PIL decodes without the GIL
        errors = dict(zip(every, pool.map(decode_error, every), strict=True))
    bad = [p for p in every if errors[p] is not None]
    if bad and bad_images == "fail":
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise EdgekdError(
            f"cannot decode image {bad[0]} ({errors[bad[0]]}){more}; remove or replace the file, or leave "
            "unreadable images out (compress: --set data.bad_images=skip; train-teacher: --bad-images skip)"
        )
    skipped += bad
    kept = {c: [(p, n) for p, n in files[c] if errors[p] is None] for c in files}
    empty = [c for c in sorted(kept) if not kept[c]]
    if empty:
        raise EdgekdError(f"class folder {empty[0]} has no readable image; add images or remove the folder")
    return kept


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
