"""Parity between a PyTorch model and its ONNX export on the same images.

Reports the largest and mean absolute difference of the outputs and how often the top-1 class
agrees. It never raises on a mismatch: the caller decides what failing means (the export stage
writes the result to ``parity.json``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from edgekd.models.prepare import cpu_eval_copy
from edgekd.runtimes.onnxruntime.infer import run_onnx
from edgekd.runtimes.onnxruntime.int8_encoding import host_model_source


def _torch_logits(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    """First output of ``model`` on ``images`` (CPU, eval, no_grad) as a float32 array."""
    with torch.no_grad():
        out = model(images)
    if isinstance(out, dict):
        out = next(iter(out.values()))
    elif isinstance(out, tuple | list):
        out = out[0]
    return out.detach().float().cpu().numpy()


def check_parity(
    model: nn.Module | torch.export.ExportedProgram,
    onnx_path: str | os.PathLike,
    images: torch.Tensor,
    *,
    atol: float = 1e-3,
    min_agreement: float = 1.0,
    providers: Sequence[str] | None = None,
) -> dict:
    """Compare ``model`` with the ONNX file on one float NCHW batch.

    Returns ``{"samples", "max_abs_diff", "mean_abs_diff", "top1_agreement", "atol", "min_agreement",
    "passed"}``; ``passed`` is ``max_abs_diff <= atol and top1_agreement >= min_agreement``. When the
    output shapes differ or ONNX Runtime cannot run the file, the differences are infinite,
    ``passed`` is False and an ``error`` entry says why.
    """
    images = images.detach().float().cpu()
    reference = _torch_logits(cpu_eval_copy(model), images)
    n = int(images.shape[0])
    error = None
    try:
        providers = list(providers or ["CPUExecutionProvider"])
        session = ort.InferenceSession(host_model_source(onnx_path), providers=providers)
        exported = run_onnx(session, images.numpy()).astype(np.float32)
    except Exception as err:  # an ONNX file that cannot run is a parity failure, reported, not raised
        exported = None
        lines = str(err).strip().splitlines()
        error = f"onnxruntime failed: {lines[0] if lines else type(err).__name__}"
    if exported is None:
        max_diff = mean_diff = float("inf")
        agreement = 0.0
    elif exported.shape != reference.shape:
        max_diff = mean_diff = float("inf")
        agreement = 0.0
        error = f"output shapes differ: PyTorch {reference.shape}, ONNX {exported.shape}"
    else:
        diff = np.abs(exported - reference)
        max_diff = float(diff.max()) if diff.size else 0.0
        mean_diff = float(diff.mean()) if diff.size else 0.0
        top_ref = reference.reshape(n, -1).argmax(axis=1)
        top_onnx = exported.reshape(n, -1).argmax(axis=1)
        agreement = float(np.mean(top_ref == top_onnx)) if n else 1.0
    result = {
        "samples": n,
        "max_abs_diff": max_diff,
        "mean_abs_diff": mean_diff,
        "top1_agreement": agreement,
        "atol": float(atol),
        "min_agreement": float(min_agreement),
        "passed": bool(max_diff <= atol and agreement >= min_agreement),
    }
    if error:
        result["error"] = error
    return result
