"""ImageFolder data with images that do not decode (issue 20): ``data.bad_images`` fail (default) or skip.

A corrupt or truncated JPEG is found when the data loads, not in the middle of an epoch: by default
the run stops with one line naming the file (exit 2); with ``skip`` the file is left out, the count is
said once, and the data fingerprint records what was left out. Grayscale folders, 8- or 16-bit,
convert to RGB with their brightness kept.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgekd.data import load_data
from edgekd.errors import EdgekdError


def _jpeg(path: Path, seed: int, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    shape = (20, 24, 3) if mode == "RGB" else (20, 24)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(buf, format="JPEG", quality=90)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def _folder(root: Path, per_class: int = 4, mode: str = "RGB") -> None:
    for c, name in enumerate(("ant", "bee")):
        for i in range(per_class):
            _jpeg(root / name / f"{i}.jpg", seed=10 * c + i, mode=mode)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a download cut short: the header reads, the pixels do not


@pytest.fixture
def corrupt(tmp_path) -> tuple[Path, Path]:
    root = tmp_path / "imgs"
    _folder(root)
    bad = root / "bee" / "2.jpg"
    _truncate(bad)
    return root, bad


def test_a_truncated_jpeg_fails_at_load_naming_the_file(corrupt):
    root, bad = corrupt
    with pytest.raises(EdgekdError) as excinfo:
        load_data(str(root), image_size=16)
    message = str(excinfo.value)
    assert "\n" not in message and str(bad) in message and "truncated" in message
    assert "data.bad_images=skip" in message


def test_skip_leaves_it_out_and_the_fingerprint_says_so(corrupt, tmp_path):
    root, bad = corrupt
    data = load_data(str(root), image_size=16, bad_images="skip", val_fraction=0.25)
    assert data.skipped == [str(bad)]
    assert len(data.train) + len(data.val) == 7
    paths = [d.dataset.paths[j] for d in (data.train.dataset, data.val.dataset) for j in d.indices]  # Subsets
    assert len(paths) == 7 and str(bad) not in paths
    for split in (data.train, data.val):  # every image left in decodes
        for i in range(len(split)):
            assert split.dataset[i][0].shape == (3, 16, 16)
    # the same folder without the file: same images, but a run that skipped one is not the same data
    bad.unlink()
    without = load_data(str(root), image_size=16, bad_images="skip", val_fraction=0.25)
    assert without.skipped == [] and without.fingerprint != data.fingerprint
    assert load_data(str(root), image_size=16, val_fraction=0.25).fingerprint == without.fingerprint


def test_garbage_and_a_non_image_with_an_image_name_are_both_found(tmp_path):
    root = tmp_path / "imgs"
    _folder(root)
    raw = bytearray((root / "ant" / "1.jpg").read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 64] = bytes(range(64))  # a bit-flipped copy: a broken data stream
    (root / "ant" / "1.jpg").write_bytes(bytes(raw))
    (root / "bee" / "readme.jpg").write_text("this is not a picture")
    data = load_data(str(root), image_size=16, bad_images="skip")
    assert sorted(Path(p).name for p in data.skipped) == ["1.jpg", "readme.jpg"]
    with pytest.raises(EdgekdError, match=r"cannot decode image .*1\.jpg .*\(and 1 more\)"):
        load_data(str(root), image_size=16)


def test_a_class_with_no_readable_image_is_named(tmp_path):
    root = tmp_path / "imgs"
    _folder(root, per_class=2)
    for p in (root / "bee").iterdir():
        _truncate(p)
    with pytest.raises(EdgekdError, match="class folder bee has no readable image"):
        load_data(str(root), bad_images="skip")


@pytest.mark.parametrize("bits", [8, 16])
def test_a_grayscale_folder_converts_to_rgb_keeping_its_brightness(tmp_path, bits):
    root = tmp_path / "gray"
    for c, name in enumerate(("dark", "light")):
        (root / name).mkdir(parents=True)
        level = 64 if c == 0 else 192
        for i in range(3):
            pixels = np.full((12, 12), level, dtype=np.uint8)
            image = Image.fromarray(pixels.astype(np.uint16) * 257 if bits == 16 else pixels)
            assert image.mode == ("I;16" if bits == 16 else "L")
            image.save(root / name / f"{i}.png")
    data = load_data(str(root), image_size=8, val_fraction=0.34)
    assert data.input_shape == (3, 8, 8)
    for split in (data.train, data.val):
        for i in range(len(split)):
            x, y = split.dataset[i]
            assert x.shape == (3, 8, 8)
            assert int(x.float().mean().round()) == (64 if y == 0 else 192)  # PIL alone clips 16-bit to 255


def test_train_teacher_stops_on_it_in_one_line_or_skips_and_says_how_many(cli, corrupt, tmp_path):
    root, bad = corrupt
    args = (
        "train-teacher",
        "--arch",
        "cnn_tiny",
        "--data",
        root,
        "--epochs",
        "1",
        "--image-size",
        "16",
        "--batch-size",
        "4",
    )
    failed = cli(*args, "--out", tmp_path / "a.pt")
    assert failed.exit_code == 2
    assert failed.stderr.strip().count("\n") == 0 and str(bad) in failed.stderr and "Traceback" not in failed.stderr
    assert not (tmp_path / "a.pt").exists()
    skipped = cli(*args, "--out", tmp_path / "b.pt", "--bad-images", "skip", "--quiet")
    assert skipped.exit_code == 0, skipped.output
    assert skipped.stderr.count("left out 1 image(s)") == 1 and (tmp_path / "b.pt").is_file()
