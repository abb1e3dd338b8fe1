"""Ultralytics/YOLO detection layout: ``data.yaml`` (path, train, val, names) + ``labels/*.txt``.

Label files sit where the image path has its last ``images`` folder replaced by ``labels`` and its
suffix by ``.txt``; each line is ``class cx cy w h``, normalised to [0, 1]. An image without a
label file (or with an empty one) is a negative. A relative ``path`` is resolved against the
folder of the YAML file (what recent Ultralytics does). Class ids map to category id ``class + 1``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from edgekd.errors import EdgekdError
from edgekd.tasks.detect.dataset import BoxCounts, DetectionData, DetectionSplit, sanitize_boxes

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def _names(raw, path: Path) -> list[str]:
    if isinstance(raw, dict) and raw and all(isinstance(k, int) for k in raw):
        if sorted(raw) != list(range(len(raw))):
            raise EdgekdError(f"{path}: names has ids {sorted(raw)}; number the classes 0..{len(raw) - 1}")
        return [str(raw[i]) for i in range(len(raw))]
    if isinstance(raw, list) and raw:
        return [str(n) for n in raw]
    raise EdgekdError(f"{path}: 'names' must be a list or a {{id: name}} map of the classes")


def _label_path(image: Path) -> Path:
    parts = list(image.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as im:  # reads the header only
            return im.height, im.width
    except OSError as err:
        raise EdgekdError(f"cannot open image {path}: {err}; replace or remove the file") from err


def parse_label_file(path: Path, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``class cx cy w h`` (normalised) -> (``[N,4]`` normalised cxcywh, ``[N]`` classes)."""
    rows, classes = [], []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            if len(fields) != 5:
                raise ValueError
            cls = int(fields[0])
            vals = [float(v) for v in fields[1:]]
        except ValueError:
            raise EdgekdError(
                f"{path}:{lineno}: malformed label line {line.strip()!r}; expected 'class cx cy w h' "
                f"(an integer and four numbers)"
            ) from None
        if not 0 <= cls < num_classes:
            raise EdgekdError(
                f"{path}:{lineno}: class id {cls} is outside names (0..{num_classes - 1}); "
                f"fix the label or add the class to data.yaml"
            )
        rows.append(vals)
        classes.append(cls)
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4), torch.tensor(classes, dtype=torch.int64)


def load_yolo_split(base: Path, rel: str, split: str, num_classes: int, counts: BoxCounts) -> DetectionSplit:
    img_dir = (base / rel).resolve()
    if not img_dir.is_dir():
        raise EdgekdError(f"YOLO {split} images folder {img_dir} does not exist; fix '{split}' in data.yaml")
    paths = sorted(p for p in img_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    sizes, boxes, labels = [], [], []
    for p in paths:
        h, w = _image_size(p)
        lp = _label_path(p)
        if lp.is_file():
            cxcywh, cls = parse_label_file(lp, num_classes)
        else:
            cxcywh, cls = torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64)
        xyxy = torch.stack(
            [
                (cxcywh[:, 0] - cxcywh[:, 2] / 2) * w,
                (cxcywh[:, 1] - cxcywh[:, 3] / 2) * h,
                (cxcywh[:, 0] + cxcywh[:, 2] / 2) * w,
                (cxcywh[:, 1] + cxcywh[:, 3] / 2) * h,
            ],
            dim=1,
        )
        keep = sanitize_boxes(xyxy, h, w, counts)
        sizes.append((h, w))
        boxes.append(xyxy[keep])
        labels.append(cls[keep])
    files = [str(p.relative_to(img_dir)) for p in paths]
    return DetectionSplit(split, list(paths), sizes, boxes, labels, files)


def load_yolo(root: Path) -> DetectionData:
    yaml_path = root if root.is_file() else root / "data.yaml"
    try:
        doc = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise EdgekdError(f"cannot read {yaml_path}: {err}; fix the YAML") from err
    if not isinstance(doc, dict) or "train" not in doc or "val" not in doc or "names" not in doc:
        raise EdgekdError(f"{yaml_path} must have 'train', 'val' and 'names' (and optionally 'path')")
    base = Path(doc.get("path") or ".").expanduser()
    if not base.is_absolute():
        base = yaml_path.parent / base
    names = _names(doc["names"], yaml_path)
    counts = BoxCounts()
    train = load_yolo_split(base, str(doc["train"]), "train", len(names), counts)
    val = load_yolo_split(base, str(doc["val"]), "val", len(names), counts)
    return DetectionData(train, val, names, list(range(1, len(names) + 1)), "yolo", str(yaml_path.parent), counts)
