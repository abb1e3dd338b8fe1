"""Detection data: COCO and YOLO loaders on tiny fixtures and BCCD, bad-data errors, digits-detect, transforms."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from edgekd.errors import EdgekdError
from edgekd.tasks.detect.data import load_detection_data
from edgekd.tasks.detect.transforms import iterate_batches, letterbox, train_augment, unletterbox

torch.set_num_threads(1)
BCCD = Path(os.environ.get("EDGEKD_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "bccd"


def _image(path: Path, w: int = 40, h: int = 30) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), (10, 20, 30)).save(path)


def write_coco(root: Path, anns: dict[str, list] | None = None, images: dict[str, list] | None = None) -> Path:
    """Train: a.png (2 boxes: one partly outside, one degenerate) + b.png (negative); val: c.png (1 box)."""
    default_images = {"train": [(1, "a.png"), (2, "b.png")], "val": [(3, "c.png")]}
    default_anns = {
        "train": [(1, 1, 7, [2, 3, 10, 8]), (2, 1, 9, [30, 20, 20, 5]), (3, 1, 7, [5, 5, 0, 4])],
        "val": [(4, 3, 9, [1, 1, 5, 5])],
    }
    images, anns = images or default_images, anns or default_anns
    for split in ("train", "val"):
        for _, name in images[split]:
            _image(root / "images" / split / name)
        doc = {
            "images": [{"id": i, "file_name": n, "width": 40, "height": 30} for i, n in images[split]],
            "annotations": [
                {"id": a, "image_id": i, "category_id": c, "bbox": b, "area": 1.0, "iscrowd": 0}
                for a, i, c, b in anns[split]
            ],
            "categories": [{"id": 7, "name": "cat"}, {"id": 9, "name": "dog"}],
        }
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))
    return root


def write_yolo(root: Path, labels: dict[str, str] | None = None) -> Path:
    labels = labels or {
        "train/a": "0 0.25 0.5 0.2 0.4\n1 0.95 0.5 0.2 0.2\n",
        "train/b": "",
        "val/c": "1 0.5 0.5 0.5 0.5\n",
    }
    for key, text in labels.items():
        split, stem = key.split("/")
        _image(root / "images" / split / f"{stem}.png")
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split / f"{stem}.txt").write_text(text)
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames:\n  0: cat\n  1: dog\n")
    return root


def test_coco_fixture_boxes_clip_drop_negatives(tmp_path):
    lines = []
    data = load_detection_data(write_coco(tmp_path), log=lines.append)
    assert data.source == "coco" and data.names == ["cat", "dog"] and data.category_ids == [7, 9]
    assert len(data.train) == 2 and len(data.val) == 1
    torch.testing.assert_close(data.train.boxes[0], torch.tensor([[2.0, 3.0, 12.0, 11.0], [30.0, 20.0, 40.0, 25.0]]))
    assert data.train.labels[0].tolist() == [0, 1]
    assert len(data.train.boxes[1]) == 0  # negative image kept
    assert (data.counts.clipped, data.counts.dropped) == (1, 1)
    assert len(lines) == 1 and "1 boxes partly outside" in lines[0] and "1 degenerate" in lines[0]
    assert data.train.image(0).shape == (3, 30, 40) and data.train.image(0).dtype == torch.uint8


def test_yolo_fixture_boxes_and_negatives(tmp_path):
    lines = []
    data = load_detection_data(write_yolo(tmp_path), log=lines.append)
    assert data.source == "yolo" and data.names == ["cat", "dog"] and data.category_ids == [1, 2]
    torch.testing.assert_close(data.train.boxes[0], torch.tensor([[6.0, 9.0, 14.0, 21.0], [34.0, 12.0, 40.0, 18.0]]))
    assert len(data.train.boxes[1]) == 0
    assert data.counts.clipped == 1 and len(lines) == 1
    assert load_detection_data(tmp_path / "data.yaml", log=None).train.file_names == ["a.png", "b.png"]


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_image", "not in"),
        ("unknown_image_id", "image_id 99"),
        ("bad_category", "category_id 5"),
        ("bad_bbox", "bbox"),
    ],
)
def test_coco_bad_data_errors(tmp_path, case, message):
    images = {"train": [(1, "a.png")], "val": [(3, "c.png")]}
    anns = {"train": [(1, 1, 7, [1, 1, 4, 4])], "val": [(4, 3, 9, [1, 1, 5, 5])]}
    if case == "unknown_image_id":
        anns["train"].append((2, 99, 7, [1, 1, 2, 2]))
    if case == "bad_category":
        anns["train"].append((2, 1, 5, [1, 1, 2, 2]))
    if case == "bad_bbox":
        anns["train"].append((2, 1, 7, [1, 1, 2]))
    write_coco(tmp_path, anns, images)
    if case == "missing_image":
        (tmp_path / "images" / "train" / "a.png").unlink()
    with pytest.raises(EdgekdError, match=message) as err:
        load_detection_data(tmp_path, log=None)
    assert "\n" not in str(err.value) and "instances_train.json" in str(err.value)


@pytest.mark.parametrize(
    "line, message",
    [
        ("2 0.5 0.5 0.1 0.1", "class id 2 is outside names"),
        ("0 0.5 0.5 0.1", "malformed label line"),
        ("zero 0.5 0.5 0.1 0.1", "malformed label line"),
    ],
)
def test_yolo_bad_label_names_file_and_line(tmp_path, line, message):
    write_yolo(tmp_path, {"train/a": f"0 0.5 0.5 0.2 0.2\n{line}\n", "val/c": ""})
    with pytest.raises(EdgekdError, match=message) as err:
        load_detection_data(tmp_path, log=None)
    assert f"{Path('labels') / 'train' / 'a.txt'}:2" in str(err.value)


def test_not_a_dataset_error(tmp_path):
    with pytest.raises(EdgekdError, match="data.yaml"):
        load_detection_data(tmp_path)
    with pytest.raises(EdgekdError, match="does not exist"):
        load_detection_data(tmp_path / "nope")


@pytest.mark.skipif(not BCCD.is_dir(), reason="shared BCCD data not present")
def test_bccd_coco_and_yolo_agree():
    coco = load_detection_data(BCCD, layout="coco", log=None)
    yolo = load_detection_data(BCCD, layout="yolo", log=None)
    assert coco.names == yolo.names == ["RBC", "WBC", "Platelets"]
    assert (len(coco.train), len(coco.val), coco.train.num_boxes(), coco.val.num_boxes()) == (205, 87, 2804, 1137)
    assert coco.train.file_names == yolo.train.file_names
    for a, b, la, lb in zip(coco.val.boxes, yolo.val.boxes, coco.val.labels, yolo.val.labels, strict=True):
        rows_a = sorted((*[round(v) for v in box], lab) for box, lab in zip(a.tolist(), la.tolist(), strict=True))
        rows_b = sorted((*[round(v) for v in box], lab) for box, lab in zip(b.tolist(), lb.tolist(), strict=True))
        assert rows_a == rows_b
    assert (yolo.counts.clipped, yolo.counts.dropped) == (0, 0)


def test_digits_detect_is_deterministic_and_valid():
    a = load_detection_data("digits-detect", n_train=12, n_val=4, seed=3)
    b = load_detection_data("digits-detect", n_train=12, n_val=4, seed=3)
    c = load_detection_data("digits-detect", n_train=12, n_val=4, seed=4)
    assert a.names == [str(i) for i in range(10)] and len(a.train) == 12 and len(a.val) == 4
    assert all(torch.equal(x, y) for x, y in zip(a.train.images, b.train.images, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a.train.images, c.train.images, strict=True))
    for img, boxes in zip(a.train.images, a.train.boxes, strict=True):
        assert img.shape == (3, 128, 128) and len(boxes) >= 1
        assert (boxes[:, 2:] > boxes[:, :2]).all() and boxes.min() >= 0 and boxes.max() <= 128
        x0, y0, x1, y1 = boxes[0].int().tolist()
        assert img[:, y0:y1, x0:x1].float().mean() > img.float().mean()  # the digit is lit inside its box


def test_letterbox_roundtrip_and_augmentation_moves_boxes():
    img = torch.zeros(3, 50, 100, dtype=torch.uint8)
    boxes = torch.tensor([[10.0, 5.0, 30.0, 25.0]])
    out, lb, r = letterbox(img, boxes, 64)
    assert out.shape == (3, 64, 64) and r == pytest.approx(0.64)
    torch.testing.assert_close(unletterbox(lb.clone(), r, (50, 100)), boxes)
    from torchvision import tv_tensors

    flip = train_augment(hflip=1.0, scale=(1.0, 1.0), translate=0.0)
    res = flip(
        {
            "image": tv_tensors.Image(out),
            "labels": torch.tensor([1]),
            "boxes": tv_tensors.BoundingBoxes(lb, format="XYXY", canvas_size=(64, 64)),
        }
    )
    torch.testing.assert_close(res["boxes"].as_subclass(torch.Tensor), torch.tensor([[64 - 19.2, 3.2, 64 - 6.4, 16.0]]))


def test_batches_reproducible_with_mosaic():
    data = load_detection_data("digits-detect", n_train=8, n_val=2)
    a = list(iterate_batches(data.train, 64, 4, train=True, seed=1, epoch=2, mosaic=0.5))
    b = list(iterate_batches(data.train, 64, 4, train=True, seed=1, epoch=2, mosaic=0.5))
    assert all(torch.equal(x.images, y.images) for x, y in zip(a, b, strict=True))
    assert a[0].images.shape == (4, 3, 64, 64) and 0 <= a[0].images.min() and a[0].images.max() <= 1
    for batch in a:
        for t in batch.targets:
            assert t["boxes"].shape[1] == 4 and len(t["boxes"]) == len(t["labels"])
