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
from pathlib import Path

from edgekd.errors import EdgekdError
from edgekd.tasks.detect.dataset import DetectionData

LAYOUTS = ("auto", "coco", "yolo")


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
        f"annotations/instances_train.json + images/train/ (COCO layout), or use --data digits-detect"
    )


def load_detection_data(
    spec: str | Path, *, layout: str = "auto", seed: int = 0, log: Callable[[str], None] | None = print, **digits_kwargs
) -> DetectionData:
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
        log(
            f"{root}: {data.counts.clipped} boxes partly outside their image were clipped, "
            f"{data.counts.dropped} degenerate boxes were dropped"
        )
    return data
