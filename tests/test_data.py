"""Tests of ``edgekd.data``: loaders (digits, .npz folders, ImageFolder trees), splits, errors,
normalisation and the seeded batch iterator. Fast: builds its own tiny datasets in ``tmp_path``;
the checks against real MNIST / CIFAR-10 run only where ``../shared/data`` (or
``$EDGEKD_SHARED_DATA``) exists.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgekd.data import (
    BatchIterator,
    Normalization,
    Split,
    compute_normalization,
    default_hflip,
    load_data,
)
from edgekd.errors import EdgekdError

IDENTITY = Normalization(mean=[0.0], std=[1.0])


def shared_data() -> Path:
    env = os.environ.get("EDGEKD_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def write_npz(path: Path, n: int, shape: tuple[int, ...], k: int = 3, seed: int = 0, **extra) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {
        "x": rng.integers(0, 256, size=(n, *shape), dtype=np.uint8),
        "y": np.arange(n, dtype=np.int64) % k,
        **extra,
    }
    np.savez(path, **arrays)
    return arrays


def assert_one_line_error(excinfo: pytest.ExceptionInfo, *needles: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message and message.strip() == message
    for needle in needles:
        assert needle in message, message


def indexed_split(n: int, c: int = 1, h: int = 8, w: int = 8, seed: int = 0) -> Split:
    """Random images whose label is their own index, so batches reveal the order they came in."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
    return Split(images=images, labels=torch.arange(n))


def as_uint8(x: torch.Tensor) -> torch.Tensor:
    """Undo the identity normalisation: float x/255 back to uint8 pixels."""
    return (x * 255).round().to(torch.uint8)


# --- digits -----------------------------------------------------------------------------------


def test_digits_loads_with_a_stratified_validation_split():
    data = load_data("digits")
    assert data.name == "digits"
    assert len(data.train) + len(data.val) == 1797
    assert len(data.val) == 360
    assert data.input_shape == (1, 8, 8)
    assert data.classes == [str(i) for i in range(10)]
    assert data.train.images is not None and data.train.images.dtype == torch.uint8
    assert data.train.images.shape == (len(data.train), 1, 8, 8)
    assert data.train.labels.dtype == torch.int64
    assert int(data.train.images.max()) == 255 and int(data.train.images.min()) == 0
    val_counts = torch.bincount(data.val.labels, minlength=10)
    all_counts = val_counts + torch.bincount(data.train.labels, minlength=10)
    assert ((val_counts.float() - 0.2 * all_counts.float()).abs() <= 1).all()
    assert "stratified" in data.val_source and "seed 0" in data.val_source
    assert len(data.fingerprint) == 64


def test_same_arguments_give_identical_splits_and_other_seeds_do_not():
    a, b = load_data("digits", seed=3), load_data("digits", seed=3)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.val.labels, b.val.labels)
    assert a.fingerprint == b.fingerprint
    c = load_data("digits", seed=4)
    assert not torch.equal(a.val.images, c.val.images)
    assert c.fingerprint != a.fingerprint
    assert load_data("digits", val_fraction=0.3).fingerprint != load_data("digits").fingerprint


def test_max_train_samples_takes_a_deterministic_balanced_subset_after_the_split():
    full = load_data("digits")
    small = load_data("digits", max_train_samples=200)
    again = load_data("digits", max_train_samples=200)
    assert len(small.train) == 200
    assert torch.equal(small.train.images, again.train.images)
    assert torch.equal(small.val.labels, full.val.labels)  # the validation split is untouched
    counts = torch.bincount(small.train.labels, minlength=10)
    assert counts.min() >= 18 and counts.max() <= 22
    assert small.fingerprint != full.fingerprint
    assert len(load_data("digits", max_train_samples=10**6).train) == len(full.train)


# --- .npz folders -------------------------------------------------------------------------------


def test_npz_folder_with_test_file_and_grayscale_images(tmp_path):
    names = np.array(["cat", "dog", "emu"])
    train = write_npz(tmp_path / "train.npz", 30, (6, 5), classes=names)
    test = write_npz(tmp_path / "test.npz", 9, (6, 5), seed=1, classes=names)
    data = load_data(str(tmp_path))
    assert data.name == str(tmp_path.resolve())
    assert data.classes == ["cat", "dog", "emu"]
    assert data.val_source == "test.npz"
    assert data.input_shape == (1, 6, 5)
    assert torch.equal(data.train.images[:, 0], torch.from_numpy(train["x"]))
    assert torch.equal(data.val.images[:, 0], torch.from_numpy(test["x"]))
    assert torch.equal(data.val.labels, torch.from_numpy(test["y"]))


def test_npz_folder_without_test_file_concatenates_parts_and_holds_out_stratified(tmp_path):
    a = write_npz(tmp_path / "train_part1.npz", 20, (4, 4, 3), k=4)
    b = write_npz(tmp_path / "train_part2.npz", 20, (4, 4, 3), k=4, seed=1)
    data = load_data(str(tmp_path), val_fraction=0.25)
    assert data.input_shape == (3, 4, 4)
    assert data.classes == ["0", "1", "2", "3"]
    assert len(data.train) == 30 and len(data.val) == 10
    assert "25% of train, stratified" in data.val_source
    assert sorted(torch.bincount(data.val.labels).tolist()) == [2, 2, 3, 3]
    # every loaded image is one of the originals, channels moved first
    originals = torch.from_numpy(np.concatenate([a["x"], b["x"]])).permute(0, 3, 1, 2)
    everything = torch.cat([data.train.images, data.val.images])
    assert sorted(map(bytes, everything.flatten(1).numpy())) == sorted(map(bytes, originals.flatten(1).numpy()))


def test_npz_val_file_is_preferred_and_image_size_resizes_in_memory(tmp_path):
    write_npz(tmp_path / "train.npz", 12, (8, 8))
    write_npz(tmp_path / "val.npz", 6, (8, 8))
    write_npz(tmp_path / "test.npz", 3, (8, 8))
    data = load_data(str(tmp_path), image_size=4)
    assert data.val_source == "val.npz" and len(data.val) == 6
    assert data.input_shape == (1, 4, 4) and data.val.images.shape == (6, 1, 4, 4)
    assert data.val.images.dtype == torch.uint8


def test_npz_fingerprint_follows_file_content(tmp_path):
    write_npz(tmp_path / "train.npz", 12, (4, 4))
    first = load_data(str(tmp_path)).fingerprint
    assert load_data(str(tmp_path)).fingerprint == first
    write_npz(tmp_path / "train.npz", 12, (4, 4), seed=7)
    assert load_data(str(tmp_path)).fingerprint != first


# --- errors -------------------------------------------------------------------------------------


def test_nonexistent_path_and_unknown_spec_list_what_is_accepted(tmp_path):
    for spec in (str(tmp_path / "nope"), "cifar100"):
        with pytest.raises(EdgekdError) as excinfo:
            load_data(spec)
        assert_one_line_error(excinfo, "digits", ".npz", "ImageFolder")


def test_empty_folder_is_rejected(tmp_path):
    with pytest.raises(EdgekdError) as excinfo:
        load_data(str(tmp_path))
    assert_one_line_error(excinfo, str(tmp_path.resolve()), "ImageFolder")


@pytest.mark.parametrize(
    ("files", "needle"),
    [
        ({"train.npz": {"x": np.zeros((5, 4, 4), np.uint8), "y": np.zeros(4, np.int64)}}, "same length"),
        ({"test.npz": {"x": np.zeros((5, 4, 4), np.uint8), "y": np.zeros(5, np.int64)}}, "no train*.npz"),
        ({"train.npz": {"x": np.zeros((5, 4, 4), np.uint8)}}, "no array y"),
        ({"train.npz": {"x": np.zeros((5, 4, 4), np.float32), "y": np.zeros(5, np.int64)}}, "uint8"),
        (
            {"train.npz": {"x": np.zeros((5, 3, 9, 9), np.uint8), "y": np.zeros(5, np.int64)}},
            "channels-first",
        ),
        (
            {
                "train.npz": {
                    "x": np.zeros((5, 4, 4), np.uint8),
                    "y": np.arange(5),
                    "classes": np.array(["a", "b"]),
                }
            },
            "outside 0..1",
        ),
        (
            {
                "train_1.npz": {"x": np.zeros((4, 4, 4), np.uint8), "y": np.zeros(4, np.int64)},
                "train_2.npz": {"x": np.zeros((4, 5, 5), np.uint8), "y": np.zeros(4, np.int64)},
            },
            "one shape",
        ),
    ],
)
def test_bad_npz_folders_give_one_line_errors(tmp_path, files, needle):
    for name, arrays in files.items():
        np.savez(tmp_path / name, **arrays)
    with pytest.raises(EdgekdError) as excinfo:
        load_data(str(tmp_path))
    assert_one_line_error(excinfo, needle)


def test_pickled_npz_is_refused(tmp_path):
    np.savez(tmp_path / "train.npz", x=np.array([{"a": 1}], dtype=object), y=np.zeros(1, np.int64))
    with pytest.raises(EdgekdError) as excinfo:
        load_data(str(tmp_path))
    assert_one_line_error(excinfo, "without pickle")


def test_bad_arguments_are_user_errors():
    with pytest.raises(EdgekdError):
        load_data("digits", val_fraction=1.0)
    with pytest.raises(EdgekdError):
        load_data("digits", max_train_samples=0)


# --- real datasets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "shape", "n_train", "first_class"),
    [("mnist", (1, 28, 28), 60000, "0"), ("cifar10", (3, 32, 32), 50000, "airplane")],
)
def test_real_dataset_folders(name, shape, n_train, first_class):
    folder = shared_data() / name
    if not folder.is_dir():
        pytest.skip(f"{folder} not present (set EDGEKD_SHARED_DATA to the shared data folder)")
    data = load_data(str(folder))
    assert data.input_shape == shape
    assert len(data.train) == n_train and len(data.val) == 10000
    assert data.val_source == "test.npz"
    assert data.classes[0] == first_class and len(data.classes) == 10
    assert torch.bincount(data.val.labels).min() > 800
    norm = compute_normalization(data.train, max_samples=2000)
    if name == "cifar10":  # README: train mean 0.4913/0.4821/0.4465, std ~0.245/0.243/0.261
        assert np.allclose(norm.mean, [0.4913, 0.4821, 0.4465], atol=0.01)
        assert np.allclose(norm.std, [0.2452, 0.2428, 0.2606], atol=0.01)
        assert default_hflip(data.input_shape)
    else:
        assert abs(norm.mean[0] - 0.1307) < 0.01
        assert not default_hflip(data.input_shape)


# --- ImageFolder trees --------------------------------------------------------------------------


def write_images(folder: Path, classes: dict[str, int], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for c, n in classes.items():
        (folder / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            h, w = int(rng.integers(10, 30)), int(rng.integers(10, 30))
            if i % 2:
                Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), mode="L").save(folder / c / f"{i}.png")
            else:
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / c / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")


def test_image_folder_flat_layout_is_lazy_rgb_resized_and_stratified(tmp_path):
    write_images(tmp_path, {"b_cat": 5, "a_dog": 5, "c_owl": 5})
    data = load_data(str(tmp_path), image_size=16, val_fraction=0.2)
    assert data.classes == ["a_dog", "b_cat", "c_owl"]
    assert data.train.images is None and data.train.dataset is not None
    assert data.input_shape == (3, 16, 16)
    assert len(data.train) == 12 and len(data.val) == 3
    assert sorted(data.val.labels.tolist()) == [0, 1, 2]
    for i in range(len(data.val)):
        image, label = data.val.dataset[i]
        assert image.dtype == torch.uint8 and image.shape == (3, 16, 16)
        assert label == int(data.val.labels[i])
    norm = compute_normalization(data.train)
    batches = list(BatchIterator(data.train, 5, shuffle=True, seed=0, normalization=norm, random_crop=True, hflip=None))
    assert [len(y) for _, y in batches] == [5, 5, 2]
    assert batches[0][0].shape == (5, 3, 16, 16) and batches[0][0].dtype == torch.float32
    again = list(
        BatchIterator(
            data.train,
            5,
            shuffle=True,
            seed=0,
            normalization=norm,
            random_crop=True,
            hflip=None,
            num_workers=1,
        )
    )
    for (x1, y1), (x2, y2) in zip(batches, again, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_image_folder_train_val_layout_and_fingerprint(tmp_path):
    write_images(tmp_path / "train", {"x": 3, "y": 3})
    write_images(tmp_path / "val", {"x": 2, "y": 1}, seed=1)
    data = load_data(str(tmp_path), image_size=12)
    assert data.classes == ["x", "y"] and data.val_source == "val/ folder"
    assert len(data.train) == 6 and len(data.val) == 3
    assert data.val.labels.tolist() == [0, 0, 1]
    first = data.fingerprint
    assert load_data(str(tmp_path), image_size=12).fingerprint == first
    assert load_data(str(tmp_path), image_size=16).fingerprint != first
    Image.new("RGB", (9, 9)).save(tmp_path / "train" / "y" / "extra.png")
    assert load_data(str(tmp_path), image_size=12).fingerprint != first


def test_image_folder_with_unknown_validation_class_is_rejected(tmp_path):
    write_images(tmp_path / "train", {"x": 2})
    write_images(tmp_path / "test", {"zebra": 2})
    with pytest.raises(EdgekdError) as excinfo:
        load_data(str(tmp_path))
    assert_one_line_error(excinfo, "zebra")


# --- normalisation and batches --------------------------------------------------------------------


def test_normalisation_gives_zero_mean_unit_std():
    data = load_data("digits")
    norm = compute_normalization(data.train)
    assert len(norm.mean) == 1 and 0.0 < norm.mean[0] < 1.0
    x = torch.cat([x for x, _ in BatchIterator(data.train, 256, shuffle=False, seed=0, normalization=norm)])
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1.0) < 1e-3
    constant = Split(images=torch.full((4, 1, 2, 2), 7, dtype=torch.uint8), labels=torch.zeros(4, dtype=torch.int64))
    assert compute_normalization(constant).std == [1.0]


def test_same_seed_and_epoch_give_same_batches_and_other_epochs_differ():
    split = indexed_split(100, c=3)
    norm = Normalization(mean=[0.5] * 3, std=[0.25] * 3)

    def epoch(e: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
        kwargs = dict(shuffle=True, seed=seed, epoch=e, normalization=norm, random_crop=True, hflip=True)
        return list(BatchIterator(split, 16, **kwargs))

    a, b = epoch(2), epoch(2)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b, strict=True))
    order = torch.cat([y for _, y in a])
    assert sorted(order.tolist()) == list(range(100))
    assert not torch.equal(order, torch.cat([y for _, y in epoch(3)]))
    assert not torch.equal(order, torch.cat([y for _, y in epoch(2, seed=2)]))
    # resuming at epoch 2 (set_epoch on a reused iterator) reproduces the uninterrupted run
    it = BatchIterator(split, 16, shuffle=True, seed=1, normalization=norm, random_crop=True, hflip=True)
    for e in range(3):
        it.set_epoch(e)
        last = list(it)
    assert all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(last, a, strict=True))


def test_eval_iteration_keeps_order_and_pixels():
    split = indexed_split(10)
    batches = list(BatchIterator(split, 4, shuffle=False, seed=0, normalization=IDENTITY))
    assert [y.tolist() for _, y in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert torch.equal(as_uint8(torch.cat([x for x, _ in batches])), split.images)


def test_random_crop_keeps_shape_and_takes_a_window_of_the_padded_image():
    split = indexed_split(32, c=2, h=6, w=7)
    p = 2
    padded = torch.nn.functional.pad(split.images, (p, p, p, p))
    moved = 0
    for x, y in BatchIterator(
        split,
        8,
        shuffle=True,
        seed=0,
        normalization=Normalization([0, 0], [1, 1]),
        random_crop=True,
        padding=p,
    ):
        assert x.shape[1:] == (2, 6, 7)
        for img, i in zip(as_uint8(x), y.tolist(), strict=True):
            windows = [
                (dy, dx)
                for dy in range(2 * p + 1)
                for dx in range(2 * p + 1)
                if torch.equal(padded[i, :, dy : dy + 6, dx : dx + 7], img)
            ]
            assert windows, "crop is not a window of the zero-padded image"
            moved += (p, p) not in windows
    assert moved > 16


@pytest.mark.parametrize("hflip", [True, False])
def test_flip_flag_is_respected(hflip):
    split = indexed_split(64)
    flipped = 0
    for x, y in BatchIterator(split, 16, shuffle=True, seed=0, normalization=IDENTITY, hflip=hflip):
        for img, i in zip(as_uint8(x), y.tolist(), strict=True):
            same = torch.equal(img, split.images[i])
            assert same or torch.equal(img, split.images[i].flip(2))
            flipped += not same
    assert (flipped > 16) if hflip else flipped == 0


def test_hflip_none_follows_channel_count():
    gray, colour = indexed_split(8), indexed_split(8, c=3)
    assert not BatchIterator(gray, 4, shuffle=False, seed=0, normalization=IDENTITY, hflip=None).hflip
    rgb = Normalization([0.0] * 3, [1.0] * 3)
    assert BatchIterator(colour, 4, shuffle=False, seed=0, normalization=rgb, hflip=None).hflip
    assert default_hflip((3, 32, 32)) and not default_hflip((1, 28, 28))


def test_len_and_drop_last():
    split = indexed_split(50)
    full = BatchIterator(split, 16, shuffle=True, seed=0, normalization=IDENTITY)
    dropped = BatchIterator(split, 16, shuffle=True, seed=0, normalization=IDENTITY, drop_last=True)
    assert len(full) == 4 and [len(y) for _, y in full] == [16, 16, 16, 2]
    assert len(dropped) == 3 and [len(y) for _, y in dropped] == [16, 16, 16]
    with pytest.raises(EdgekdError):
        BatchIterator(split, 64, shuffle=True, seed=0, normalization=IDENTITY, drop_last=True)


def test_ranks_take_disjoint_shares_of_one_permutation():
    split = indexed_split(50)
    common = dict(seed=0, normalization=IDENTITY, world_size=3)
    evals = [torch.cat([y for _, y in BatchIterator(split, 8, shuffle=False, rank=r, **common)]) for r in range(3)]
    assert sorted(torch.cat(evals).tolist()) == list(range(50))  # evaluation: exact, no duplicates
    trains = [BatchIterator(split, 8, shuffle=True, rank=r, **common) for r in range(3)]
    assert len({len(t) for t in trains}) == 1  # every rank steps the same number of times
    shares = [torch.cat([y for _, y in t]) for t in trains]
    assert len(set(torch.cat(shares).tolist())) == 50
    dropped = [BatchIterator(split, 8, shuffle=True, rank=r, drop_last=True, **common) for r in range(3)]
    seen = torch.cat([y for t in dropped for _, y in t])
    assert len(seen) == 48 and len(set(seen.tolist())) == 48
