"""A folder of ``.npz`` archives: ``train*.npz`` for training, ``val.npz`` or ``test.npz`` to validate.

Each archive holds ``x`` (uint8, (N, H, W) grayscale or (N, H, W, C) channels-last) and ``y``
(integer labels), optionally ``classes`` (names). Training files are read in sorted order and
concatenated (CIFAR-10's ``train_part1..5.npz``, MNIST's ``train.npz``). Archives load with
``allow_pickle=False``: they are data, never code. Every inconsistency is a one-line error.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgekd.data.bundle import LoadedSource, Split
from edgekd.data.splits import hold_out
from edgekd.errors import EdgekdError
from edgekd.io import sha256_file

LAYOUT_HINT = "expected train*.npz (and optionally test.npz or val.npz) with arrays x (N,H,W[,C]) uint8 and y"
VAL_FILES = ("val.npz", "test.npz")  # the first one present is the validation split


@dataclass
class _Arrays:
    x: np.ndarray  # uint8 (N, H, W, C)
    y: np.ndarray  # int64 (N,)
    classes: list[str] | None


def is_npz_folder(root: Path) -> bool:
    return any(p.is_file() for p in root.glob("*.npz"))


def load_npz_source(root: Path, *, val_fraction: float, seed: int) -> LoadedSource:
    train_files = sorted(p for p in root.glob("train*.npz") if p.is_file())
    if not train_files:
        raise EdgekdError(f"data folder {root} has no train*.npz file; {LAYOUT_HINT}")
    val_file = next((root / n for n in VAL_FILES if (root / n).is_file()), None)

    parts = [_read(p) for p in train_files]
    val_part = _read(val_file) if val_file is not None else None
    everything = parts + ([val_part] if val_part is not None else [])
    files = train_files + ([val_file] if val_file is not None else [])

    shape = parts[0].x.shape[1:]
    for path, part in zip(files, everything, strict=True):
        if part.x.shape[1:] != shape:
            raise EdgekdError(
                f"{path.name} has images of shape {_hwc(part.x.shape[1:])} but {files[0].name} has "
                f"{_hwc(shape)}; all .npz files in {root} must hold images of one shape"
            )
    classes = _classes(files, everything)
    for path, part in zip(files, everything, strict=True):
        bad = (part.y < 0) | (part.y >= len(classes))
        if bad.any():
            raise EdgekdError(
                f"{path} has label {int(part.y[bad][0])} outside 0..{len(classes) - 1} "
                f"({len(classes)} classes); fix y or list every class name in a 'classes' array"
            )

    train = _to_split(np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]))
    if val_part is not None:
        val = _to_split(val_part.x, val_part.y)
        val_source = val_file.name
    else:
        train, val, val_source = hold_out(train, val_fraction, seed, "train")
    content = [{"file": p.name, "bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in files]
    return LoadedSource("npz", str(root), train, val, classes, val_source, content)


def _read(path: Path) -> _Arrays:
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = set(archive.files)
            missing = [k for k in ("x", "y") if k not in names]
            if missing:
                present = ", ".join(sorted(names)) or "none"
                raise EdgekdError(f"{path} has no array {' or '.join(missing)} (it has: {present}); {LAYOUT_HINT}")
            x, y = archive["x"], archive["y"]
            classes = archive["classes"] if "classes" in names else None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise EdgekdError(
            f"cannot read {path} as a NumPy .npz archive without pickle ({err}); save it with "
            "np.savez(path, x=uint8 images, y=int labels)"
        ) from None
    return _Arrays(x=_check_x(path, x), y=_check_y(path, y, len(x)), classes=_check_classes(path, classes))


def _check_x(path: Path, x: np.ndarray) -> np.ndarray:
    if x.dtype != np.uint8:
        raise EdgekdError(
            f"{path}: x has dtype {x.dtype}, expected uint8 pixels 0..255; convert it, e.g. "
            "np.clip(np.rint(x * 255), 0, 255).astype(np.uint8) for floats in [0, 1]"
        )
    if x.ndim == 3:
        return x[..., None]
    if x.ndim == 4:
        if x.shape[-1] > 4 and x.shape[1] in (1, 3, 4):
            raise EdgekdError(
                f"{path}: x of shape {x.shape} looks channels-first (N,C,H,W); save it channels-last "
                "(N,H,W,C), e.g. x.transpose(0, 2, 3, 1)"
            )
        return x
    raise EdgekdError(f"{path}: x has shape {x.shape}; expected (N,H,W) grayscale or (N,H,W,C) images")


def _check_y(path: Path, y: np.ndarray, n: int) -> np.ndarray:
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise EdgekdError(
            f"{path}: y has shape {y.shape} and dtype {y.dtype}; expected integer class indices of shape (N,)"
        )
    if len(y) != n:
        raise EdgekdError(f"{path}: x has {n} images but y has {len(y)} labels; they must have the same length")
    if n == 0:
        raise EdgekdError(f"{path} holds no images; remove it or fill it")
    return y.astype(np.int64, copy=False)


def _check_classes(path: Path, classes: np.ndarray | None) -> list[str] | None:
    if classes is None:
        return None
    if classes.ndim != 1 or len(classes) == 0:
        raise EdgekdError(f"{path}: classes has shape {classes.shape}; expected a 1-D array of class names")
    return [str(c) for c in classes.tolist()]


def _classes(files: list[Path], parts: list[_Arrays]) -> list[str]:
    named = [(f, p.classes) for f, p in zip(files, parts, strict=True) if p.classes is not None]
    for f, names in named[1:]:
        if names != named[0][1]:
            raise EdgekdError(
                f"{f.name} and {named[0][0].name} list different class names; every .npz in one folder "
                "must carry the same 'classes' array (or none)"
            )
    if named:
        return named[0][1]
    _check_label_gaps(files, parts)
    return [str(i) for i in range(int(max(int(p.y.max()) for p in parts)) + 1)]


def _check_label_gaps(files: list[Path], parts: list[_Arrays]) -> None:
    """Without class names the classes are 0..max(y): a label beyond a run of classes no image has (a 15
    on 10-class data) is a stray label, named with its file and index rather than counted as 16 classes."""
    seen = np.unique(np.concatenate([p.y for p in parts]))
    top = int(seen.max())
    missing = sorted(set(range(top + 1)) - {int(v) for v in seen})
    if not missing:
        return
    first_gap = missing[0]
    n_classes = first_gap  # labels 0..first_gap-1 all occur
    stray = {int(v) for v in seen if v > first_gap}
    for path, part in zip(files, parts, strict=True):
        hits = np.flatnonzero(np.isin(part.y, list(stray)))
        if len(hits):
            i = int(hits[0])
            others = sum(int(np.isin(p.y, list(stray)).sum()) for p in parts) - 1
            more = f" ({others} more such label{'s' if others != 1 else ''})" if others else ""
            label = int(part.y[i])
            gap_end = max(m for m in missing if m < label)
            gap = f"{first_gap}..{gap_end}" if gap_end > first_gap else str(first_gap)
            raise EdgekdError(
                f"{path}: y[{i}] = {label}{more}, but no image has label {gap}: the labels look like "
                f"{n_classes} classes (0..{n_classes - 1}) with a stray label; fix y[{i}], or save a 'classes' "
                f"array naming all {top + 1} classes if label {label} is meant"
            )


def _to_split(x: np.ndarray, y: np.ndarray) -> Split:
    images = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).contiguous()
    return Split(images=images, labels=torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)))


def _hwc(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)
