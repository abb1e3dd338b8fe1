"""Detection datasets: one in-memory form for COCO, YOLO and the embedded ``digits-detect``.

Every layout is read into a ``DetectionData``: a train and a val ``DetectionSplit`` whose images
are decoded lazily (paths) or held as uint8 tensors, with boxes as float32 ``[N, 4]`` xyxy in the
image's own pixels and labels as contiguous int64 class indices ``0..C-1``. ``category_ids``
maps those indices back to the dataset's own ids (COCO ``category_id``; YOLO class + 1) so
results JSON names the user's categories.

Bad data is a user error (``EdgekdError``, one line, file named); boxes partly outside the image
are clipped and degenerate ones dropped, both counted and reported once by ``load_detection_data``.
Images without boxes stay, as negatives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from edgekd.errors import EdgekdError

LAYOUTS = ("auto", "coco", "yolo")


@dataclass
class BoxCounts:
    """How many boxes the loader had to fix: clipped to the image, or dropped as degenerate."""

    clipped: int = 0
    dropped: int = 0


@dataclass
class DetectionSplit:
    """One split: per image a source (path or uint8 ``[3,H,W]``), its size, boxes and labels."""

    name: str
    images: list[Path | torch.Tensor]
    sizes: list[tuple[int, int]]  # (height, width)
    boxes: list[torch.Tensor]  # float32 [N, 4] xyxy, pixels of the original image
    labels: list[torch.Tensor]  # int64 [N], 0..C-1
    file_names: list[str]

    def __len__(self) -> int:
        return len(self.images)

    def image(self, i: int) -> torch.Tensor:
        """The i-th image as uint8 ``[3, H, W]`` (decoded from disk when it is a path)."""
        src = self.images[i]
        if isinstance(src, torch.Tensor):
            return src
        from torchvision.io import ImageReadMode, decode_image

        try:
            return decode_image(str(src), mode=ImageReadMode.RGB)
        except RuntimeError as err:
            raise EdgekdError(f"cannot decode image {src}: {err}; replace or remove the file") from err

    def subset(self, n: int) -> DetectionSplit:
        """The first ``n`` images (for quick checks)."""
        return DetectionSplit(self.name, self.images[:n], self.sizes[:n], self.boxes[:n], self.labels[:n],
                              self.file_names[:n])

    def num_boxes(self) -> int:
        return sum(len(b) for b in self.boxes)


@dataclass
class DetectionData:
    """A detection dataset: train/val splits, class names, the dataset's own category ids."""

    train: DetectionSplit
    val: DetectionSplit
    names: list[str]
    category_ids: list[int]
    source: str  # "coco", "yolo" or "digits-detect"
    root: str | None = None
    counts: BoxCounts = field(default_factory=BoxCounts)

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def summary(self) -> str:
        return (f"{self.source}: {len(self.names)} classes, train {len(self.train)} images / "
                f"{self.train.num_boxes()} boxes, val {len(self.val)} images / {self.val.num_boxes()} boxes")


def sanitize_boxes(boxes: torch.Tensor, height: int, width: int, counts: BoxCounts,
                   min_size: float = 1e-3, tol: float = 0.01) -> torch.Tensor:
    """Clip xyxy boxes to the image and return the keep mask; update ``counts`` in place.

    A box with any coordinate outside ``[0, W] x [0, H]`` is clipped; it is counted when a corner
    moved by more than ``tol`` pixels (YOLO's 6-decimal rounding moves edges by ~3e-4 px). A box
    whose width or height is below ``min_size`` pixels after clipping is dropped (counted).
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.bool)
    clipped = boxes.clone()
    clipped[:, 0::2] = clipped[:, 0::2].clamp(0, width)
    clipped[:, 1::2] = clipped[:, 1::2].clamp(0, height)
    keep = ((clipped[:, 2] - clipped[:, 0]) >= min_size) & ((clipped[:, 3] - clipped[:, 1]) >= min_size)
    changed = ((clipped - boxes).abs().amax(dim=1) > tol) & keep
    counts.clipped += int(changed.sum())
    counts.dropped += int((~keep).sum())
    boxes.copy_(clipped)
    return keep


def detect_layout(root: Path) -> str:
    """``yolo`` for a data.yaml (or a folder holding one), ``coco`` for ``annotations/instances_*.json``."""
    if root.is_file() and root.suffix in (".yaml", ".yml"):
        return "yolo"
    if root.is_dir() and (root / "data.yaml").is_file():
        return "yolo"
    if root.is_dir() and (root / "annotations" / "instances_train.json").is_file():
        return "coco"
    raise EdgekdError(
        f"{root} is not a detection dataset: expected a data.yaml (YOLO layout) or "
        f"annotations/instances_train.json + images/train/ (COCO layout), or use --data digits-detect")


def load_detection_data(spec: str | Path, *, layout: str = "auto", seed: int = 0,
                        log: Callable[[str], None] | None = print, **digits_kwargs) -> DetectionData:
    """Load ``spec``: ``"digits-detect"`` (embedded, seeded) or a COCO / YOLO dataset folder.

    ``layout`` forces ``coco`` or ``yolo`` when a folder holds both. The clip/drop counts are
    passed to ``log`` once (when either is non-zero). ``seed`` and ``digits_kwargs`` only matter
    for ``digits-detect`` (see ``make_digits_detect``).
    """
    if layout not in LAYOUTS:
        raise EdgekdError(f"unknown detection layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    if str(spec) == "digits-detect":
        from edgekd.tasks.detect.digits_detect import make_digits_detect

        return make_digits_detect(seed=seed, **digits_kwargs)
    root = Path(spec).expanduser()
    if not root.exists():
        raise EdgekdError(f"detection data {root} does not exist; give a COCO or YOLO dataset folder or digits-detect")
    kind = detect_layout(root) if layout == "auto" else layout
    if kind == "coco":
        from edgekd.tasks.detect.coco import load_coco

        data = load_coco(root)
    else:
        from edgekd.tasks.detect.yolo import load_yolo

        data = load_yolo(root)
    if log is not None and (data.counts.clipped or data.counts.dropped):
        log(f"{root}: {data.counts.clipped} boxes partly outside their image were clipped, "
            f"{data.counts.dropped} degenerate boxes were dropped")
    return data
