"""Detector files: edgekd's own checkpoint, and a teacher given as a torchvision state_dict.

    {"format": "edgekd.detector/1", "arch": "edet_s" | "tv:<builder>", "names": [...],
     "category_ids": [...], "imgsz": 320, "state_dict": {...}, "metrics": {...}}

Both load with ``weights_only=True``; a pickled module, TorchScript and a ``torch.export`` program are
refused unless the user trusts the file (``--trust-checkpoint``; edgekd/tasks/detect/code_teacher.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.io import atomic_torch_save
from edgekd.tasks.detect.code_teacher import CodeDetector, is_code_archive, load_code_detector
from edgekd.tasks.detect.models import build_detector

FORMAT = "edgekd.detector/1"


def save_detector(
    path: str | Path,
    model: nn.Module,
    *,
    arch: str,
    names: list[str],
    category_ids: list[int],
    imgsz: int,
    metrics: dict[str, Any] | None = None,
) -> Path:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return atomic_torch_save(
        path,
        {
            "format": FORMAT,
            "arch": arch,
            "names": list(names),
            "category_ids": list(category_ids),
            "imgsz": imgsz,
            "state_dict": state,
            "metrics": metrics or {},
        },
    )


def load_detector(
    path: str | Path, *, arch: str | None, num_classes: int, imgsz: int, trust: bool = False
) -> tuple[nn.Module, dict[str, Any]]:
    """``(model, info)`` from an edgekd detector file or a state_dict of ``arch`` (``--teacher-arch``).

    ``info["imgsz"]`` is the input size stored in an edgekd detector file (a searched student's own
    size may differ from ``detect.imgsz``), else ``imgsz``."""
    path = Path(path)
    if is_code_archive(path):
        return load_code_detector(path, num_classes=num_classes, imgsz=imgsz, trust=trust)
    try:
        data = torch.load(path, map_location="cpu", weights_only=not trust)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EdgekdError(
            f"cannot read the detector {path} with weights_only=True ({first[:160]}); pass an edgekd "
            "detector or a state_dict with --teacher-arch, or --trust-checkpoint for a pickled model"
        ) from None
    if isinstance(data, nn.Module):
        if hasattr(data, "family"):  # edgekd's own detector, pickled whole
            return data.eval(), {
                "arch": getattr(data, "name", type(data).__name__),
                "kind": "pickled module",
                "imgsz": imgsz,
            }
        model = CodeDetector(data, "pickled_module", num_classes, imgsz)
        return model, {"arch": model.name, "kind": "pickled module", "imgsz": imgsz}
    if isinstance(data, dict) and data.get("format") == FORMAT:
        arch, state = data["arch"], data["state_dict"]
        if len(data["names"]) != num_classes:
            raise EdgekdError(
                f"the detector {path} has {len(data['names'])} classes and the data {num_classes}; "
                "train it on this data (edgekd train-teacher --task detect)"
            )
        kind = "edgekd detector"
        imgsz = int(data.get("imgsz") or imgsz)
    elif isinstance(data, dict) and all(isinstance(v, torch.Tensor) for v in data.values()):
        if not arch:
            raise EdgekdError(
                f"{path} is a bare state_dict; pass --teacher-arch (e.g. tv:ssdlite320_mobilenet_v3_large)"
            )
        state, kind = data, "state_dict"
    else:
        raise EdgekdError(f"{path} is not a detector checkpoint (no {FORMAT!r} format and not a state_dict)")
    model = build_detector(arch, num_classes, imgsz)
    target = model.model if hasattr(model, "model") and not any(k.startswith("model.") for k in state) else model
    try:
        target.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise EdgekdError(
            f"the weights in {path} do not fit {arch} with {num_classes} classes ({first[:160]}); "
            "check --teacher-arch and the data"
        ) from None
    return model.eval(), {"arch": arch, "kind": kind, "imgsz": imgsz}
