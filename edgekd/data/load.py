"""``load_data(spec)``: turn a data spec into a ``DataBundle``.

A spec is ``"digits"`` (scikit-learn's bundled digits, the embedded default), a folder of
``.npz`` archives, or an ImageFolder tree. Loaders return train/val splits; this module then
applies ``max_train_samples`` and ``image_size`` and computes the fingerprint, the same way for
every source. Same arguments, same splits: every random choice is seeded by ``seed``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edgekd.data.bundle import DataBundle, LoadedSource, Split
from edgekd.data.digits import load_digits_source
from edgekd.data.fingerprint import data_fingerprint
from edgekd.data.image_folder import BadImages, is_image_folder, load_image_folder_source
from edgekd.data.npz_folder import is_npz_folder, load_npz_source
from edgekd.data.resize import resize_images
from edgekd.data.splits import subset_indices, take
from edgekd.errors import EdgekdError

ACCEPTED = (
    "use 'digits' (built in), a folder of .npz files (train*.npz [+ test.npz] with arrays x and y), "
    "or an ImageFolder tree (ROOT/CLASS/images or ROOT/train/CLASS + ROOT/val/CLASS)"
)

# Named, built-in datasets (no path): name -> loader(val_fraction=, seed=).
NAMED_SOURCES: dict[str, Callable[..., LoadedSource]] = {"digits": load_digits_source}


def load_data(
    spec: str,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    max_train_samples: int | None = None,
    image_size: int | None = None,
    bad_images: BadImages = "fail",
) -> DataBundle:
    """``bad_images`` (ImageFolder): "fail" on the first image PIL cannot decode, or "skip" such images."""
    if not 0.0 < val_fraction < 1.0:
        raise EdgekdError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    if max_train_samples is not None and max_train_samples < 1:
        raise EdgekdError(f"max_train_samples must be at least 1 (or unset for all), got {max_train_samples}")
    if image_size is not None and image_size < 1:
        raise EdgekdError(f"image_size must be a positive number of pixels (or unset), got {image_size}")

    source = _load_source(str(spec), val_fraction=val_fraction, seed=seed, image_size=image_size, bad_images=bad_images)
    train, val = source.train, source.val
    if len(train) == 0 or len(val) == 0:
        raise EdgekdError(f"data {source.name} gave an empty train or validation split; add images")
    if max_train_samples is not None:
        train = take(train, subset_indices(train.labels, max_train_samples, seed))
    if image_size is not None and not train.lazy:
        train = _resized(train, image_size, "training images")
        val = _resized(val, image_size, "validation images")
    settings = {
        "val_fraction": val_fraction,
        "seed": seed,
        "max_train_samples": max_train_samples,
        "image_size": image_size,
    }
    return DataBundle(
        name=source.name,
        train=train,
        val=val,
        classes=source.classes,
        input_shape=_input_shape(train),
        fingerprint=data_fingerprint(source, settings),
        val_source=source.val_source,
        skipped=source.skipped,
    )


def _load_source(
    spec: str, *, val_fraction: float, seed: int, image_size: int | None, bad_images: BadImages
) -> LoadedSource:
    if spec in NAMED_SOURCES:
        return NAMED_SOURCES[spec](val_fraction=val_fraction, seed=seed)
    path = Path(spec).expanduser()
    if not path.exists():
        raise EdgekdError(f"data {spec!r} is neither a built-in dataset nor an existing path; {ACCEPTED}")
    root = path.resolve()
    if root.is_file():
        raise EdgekdError(f"data {spec!r} is a file; pass the folder that holds it; {ACCEPTED}")
    if is_npz_folder(root):
        return load_npz_source(root, val_fraction=val_fraction, seed=seed)
    if is_image_folder(root):
        return load_image_folder_source(
            root, val_fraction=val_fraction, seed=seed, image_size=image_size, bad_images=bad_images
        )
    raise EdgekdError(f"data folder {root} holds neither .npz files nor class subfolders of images; {ACCEPTED}")


def _resized(split: Split, size: int, what: str) -> Split:
    assert split.images is not None
    return Split(images=resize_images(split.images, size, what=what), labels=split.labels)


def _input_shape(split: Split) -> tuple[int, int, int]:
    if split.images is not None:
        c, h, w = split.images.shape[1:]
    else:
        assert split.dataset is not None
        c, h, w = split.dataset[0][0].shape
    return int(c), int(h), int(w)
