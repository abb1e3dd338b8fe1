"""COCO detection layout: ``annotations/instances_{train,val}.json`` + ``images/{train,val}/``.

Category ids may be any integers; they are mapped to contiguous indices in the order of the
``categories`` list, and kept in ``DetectionData.category_ids`` for results JSON. ``iscrowd``
annotations are skipped (COCO evaluation ignores them too).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from edgekd.errors import EdgekdError
from edgekd.tasks.detect.dataset import BoxCounts, DetectionData, DetectionSplit, sanitize_boxes


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise EdgekdError(f"cannot read COCO annotations {path}: {err}; fix or regenerate the file") from err


def _categories(doc: dict, path: Path) -> tuple[list[int], list[str]]:
    cats = doc.get("categories")
    if not isinstance(cats, list) or not cats:
        raise EdgekdError(f"{path} has no 'categories' list; add one entry per class with id and name")
    ids = [int(c["id"]) for c in cats]
    names = [str(c.get("name", c["id"])) for c in cats]
    return ids, names


def load_coco_split(
    root: Path, split: str, cat_ids: list[int] | None, counts: BoxCounts
) -> tuple[DetectionSplit, list[int], list[str]]:
    """Read one split; ``cat_ids`` from the train split fixes the class order for the others."""
    ann_path = root / "annotations" / f"instances_{split}.json"
    img_dir = root / "images" / split
    if not ann_path.is_file():
        raise EdgekdError(f"missing {ann_path}; the COCO layout needs annotations/instances_{split}.json")
    doc = _read_json(ann_path)
    ids, names = _categories(doc, ann_path)
    if cat_ids is not None and ids != cat_ids:
        raise EdgekdError(f"{ann_path} lists categories {ids}, the train split {cat_ids}; use one categories list")
    index_of = {cid: i for i, cid in enumerate(ids)}
    images = doc.get("images", [])
    by_id: dict[int, int] = {}
    paths, sizes, files = [], [], []
    for img in images:
        path = img_dir / img["file_name"]
        if not path.is_file():
            raise EdgekdError(
                f"{ann_path}: image {img['file_name']!r} (id {img['id']}) is not in {img_dir}; "
                f"add the file or remove its entry"
            )
        by_id[int(img["id"])] = len(paths)
        paths.append(path)
        sizes.append((int(img["height"]), int(img["width"])))
        files.append(str(img["file_name"]))
    per_boxes: list[list[list[float]]] = [[] for _ in paths]
    per_labels: list[list[int]] = [[] for _ in paths]
    for ann in doc.get("annotations", []):
        aid = ann.get("id", "?")
        if int(ann["image_id"]) not in by_id:
            raise EdgekdError(
                f"{ann_path}: annotation {aid} names image_id {ann['image_id']}, which is not in "
                f"'images'; add the image or remove the annotation"
            )
        cid = int(ann["category_id"])
        if cid not in index_of:
            raise EdgekdError(
                f"{ann_path}: annotation {aid} has category_id {cid}, not one of the categories "
                f"{ids}; fix the id or add the category"
            )
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox)):
            raise EdgekdError(f"{ann_path}: annotation {aid} has bbox {bbox!r}; it must be [x, y, width, height]")
        if ann.get("iscrowd", 0):
            continue
        x, y, w, h = (float(v) for v in bbox)
        k = by_id[int(ann["image_id"])]
        per_boxes[k].append([x, y, x + w, y + h])
        per_labels[k].append(index_of[cid])
    boxes, labels = [], []
    for k, (h, w) in enumerate(sizes):
        b = torch.tensor(per_boxes[k], dtype=torch.float32).reshape(-1, 4)
        lab = torch.tensor(per_labels[k], dtype=torch.int64)
        keep = sanitize_boxes(b, h, w, counts)
        boxes.append(b[keep])
        labels.append(lab[keep])
    return DetectionSplit(split, paths, sizes, boxes, labels, files), ids, names


def load_coco(root: Path) -> DetectionData:
    counts = BoxCounts()
    train, ids, names = load_coco_split(root, "train", None, counts)
    val, _, _ = load_coco_split(root, "val", ids, counts)
    return DetectionData(train, val, names, ids, "coco", str(root), counts)
