"""Modelled latency of a PyTorch edge detector on a target, decode and NMS included.

``detector_latency(model, target, imgsz)`` exports the ``edet_*`` model the way ``edgekd export``
does (decode + NMS inside the graph) to a temporary file and prices it with
:func:`edgekd.targets.detector_latency.estimate_detector_latency` (layers through the calibration
table or the roofline, NMS through its measured term). A search can call it per candidate.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from torch import nn

from edgekd.targets.detector_latency import DetectorLatency, estimate_detector_latency
from edgekd.tasks.detect.export import DEFAULT_NMS, export_detector_onnx


def detector_latency(
    model: nn.Module,
    target: str | os.PathLike,
    imgsz: int = 320,
    *,
    precision: str = "fp32",
    nms: dict | None = None,
    lut="auto",
) -> DetectorLatency:
    """The modelled latency of edge detector ``model`` at ``imgsz`` on ``target`` (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="edgekd-detlat-") as tmp:
        path = export_detector_onnx(
            model, Path(tmp) / "detector.onnx", imgsz=imgsz, nms={**DEFAULT_NMS, **(nms or {})}, dynamic_batch=False
        )
        return estimate_detector_latency(path, target, precision=precision, lut=lut)
