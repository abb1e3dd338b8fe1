"""Runtimes the bench stage measures with, by name, and what each one runs.

A runtime turns a *candidate* (a model in one format: the teacher's FP32 ONNX, the student's
INT8 ONNX, the student's PyTorch module in FP16 ...) into a *runner* that predicts and can be
timed. ``edgekd/runtimes/registry.py`` maps the names users pass to ``edgekd bench --runtime``
to the classes, which live with their runtime:

    onnxruntime            ONNX Runtime, CPU execution provider (FP32 and INT8 ONNX)
    onnxruntime-cuda       ONNX Runtime, CUDA execution provider (FP32 ONNX)
    onnxruntime-tensorrt   ONNX Runtime, TensorRT execution provider (FP32 and TensorRT-flavour INT8 ONNX)
    torch                  PyTorch eager on the CPU (FP32)
    torch-cuda             PyTorch eager on a CUDA GPU (FP32 and FP16)
    tensorrt               a TensorRT engine (edgekd/runtimes/tensorrt/)

A runtime that cannot run on this machine (no GPU, no provider, no tensorrt) says why in one line
(``unavailable()``); the stage records it as skipped instead of failing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

# Names are listed here (not only by registration) so that config validation needs no heavy import.
RUNTIME_NAMES = ("onnxruntime", "onnxruntime-cuda", "onnxruntime-tensorrt", "torch", "torch-cuda", "tensorrt")


def runtime_names() -> list[str]:
    return list(RUNTIME_NAMES)


@dataclass
class ModelFiles:
    """What a run has to benchmark: ONNX files, PyTorch modules (loaded lazily) and engines."""

    onnx_fp32: dict[str, Path] = field(default_factory=dict)  # "teacher"/"student" -> FP32 ONNX
    int8_cpu: Path | None = None  # export/model_int8_cpu.onnx (ONNX Runtime CPU flavour, uint8 activations)
    int8_trt: Path | None = None  # export/model_int8.onnx (TensorRT flavour, symmetric int8 Q/DQ)
    torch_models: dict[str, Callable[[], object]] = field(default_factory=dict)  # name -> () -> nn.Module
    engines: dict[str, Path] = field(default_factory=dict)  # "student" -> a TensorRT engine built here
    target_kind: str = "cpu"


@dataclass(frozen=True)
class Candidate:
    """One model in one format, as one runtime runs it."""

    model: str  # "teacher" or "student"
    format: str  # onnx-fp32 | onnx-int8 | pytorch-fp32 | pytorch-fp16 | tensorrt-engine
    path: Path | None  # the file it runs (None for a PyTorch module held in memory)
    note: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.model, self.format)


class Runner:
    """A loaded model: ``predict`` returns logits; ``timer`` returns a call that runs one synchronised
    inference on a prepared batch (so timing excludes preparing the input)."""

    provider: str = ""
    device: str = "cpu"

    def predict(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def timer(self, x: np.ndarray) -> Callable[[], None]:
        raise NotImplementedError

    def gpu_peak_mib(self) -> float | None:
        return None

    time_runs: Callable[[int, int, int], list[float]] | None = None  # a runtime's own timer, if it has one

    def close(self) -> None:
        pass


class Runtime:
    name: ClassVar[str]
    device: ClassVar[str] = "cpu"

    def unavailable(self) -> str | None:
        """None when this runtime can run here, else one line saying why not."""
        return None

    def candidates(self, models: ModelFiles) -> list[Candidate]:
        raise NotImplementedError

    def open(self, candidate: Candidate, models: ModelFiles, *, threads: int | None) -> Runner:
        raise NotImplementedError


def cuda_unavailable() -> str | None:
    """None when torch sees a CUDA GPU, else why not (one line)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to torch on this machine"
    return None


def top_k_accuracy(predict: Callable[[np.ndarray], np.ndarray], batches: Iterable, *, empty: str) -> dict:
    """Top-1 (and top-5 when there are more than 5 classes) of ``predict`` (float32 NCHW images ->
    logits) on ``batches`` of (images, integer labels), torch tensors or arrays. Returns ``{"top1",
    "samples"}`` with accuracies as fractions in 0..1, plus ``"top5"``; ``empty`` is the error when
    there are no images."""
    from edgekd.errors import EdgekdError

    samples = top1 = top5 = classes = 0
    for images, labels in batches:
        x = _as_numpy(images).astype(np.float32, copy=False)
        y = _as_numpy(labels).reshape(-1).astype(np.int64)
        logits = np.asarray(predict(x), dtype=np.float32).reshape(x.shape[0], -1)
        if logits.shape[0] != y.shape[0]:
            raise EdgekdError(
                f"a batch has {logits.shape[0]} images but {y.shape[0]} labels; give one integer label per image"
            )
        classes = logits.shape[1]
        top1 += int(np.sum(logits.argmax(axis=1) == y))
        if classes > 5:
            best5 = np.argpartition(-logits, 4, axis=1)[:, :5]
            top5 += int(np.sum(np.any(best5 == y[:, None], axis=1)))
        samples += int(y.shape[0])
    if samples == 0:
        raise EdgekdError(empty)
    result = {"top1": top1 / samples, "samples": samples}
    if classes > 5:
        result["top5"] = top5 / samples
    return result


def _as_numpy(value) -> np.ndarray:
    """A torch tensor or array-like as a numpy array (on the CPU)."""
    if hasattr(value, "detach"):  # a torch tensor (torch itself is not imported for this)
        return value.detach().cpu().numpy()
    return np.asarray(value)
