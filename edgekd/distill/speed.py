"""How fast the trainer runs: mixed precision, memory format, compilation, the teacher's mode.

``distill.precision`` (``--precision``):

    fp32   no autocast (the default; the references' setting)
    bf16   forward passes under ``torch.autocast(dtype=bfloat16)``, on CUDA and CPU alike
    fp16   forward passes under ``torch.autocast(dtype=float16)`` with a ``GradScaler`` (loss scaling,
           Micikevicius et al., ICLR 2018, "Mixed Precision Training"); CUDA only

Only the forward passes of student and teacher run in reduced precision. The taps they produce are
cast to float32 before any loss (CE, KD and every feature, relation and contrastive method), so the
losses, their connectors and the optimizer step are float32 in every mode: a Gram matrix, a pairwise
distance or an NCE score is never computed in 8 mantissa bits.

``distill.channels_last`` (``--channels-last/--no-channels-last``): student, teacher and every batch
in the NHWC memory format. Values and shapes are unchanged (taps are logical NCHW tensors whatever
their strides, so feature methods that flatten or reshape them read the same numbers); only the
kernels differ. Unset, :func:`use_channels_last` decides.

``distill.compile`` (``--compile``): ``torch.compile`` of the student's and the teacher's forward
passes (the tap hooks stay on the original modules). Off by default: see README for what it measured.

The teacher runs under ``torch.inference_mode`` (no autograd records, no version counters); its taps
are copied out of inference mode once (:func:`from_inference`) because trainable connectors on the
teacher's side (CRD's projection head) save their input for backward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from edgekd.errors import EdgekdError

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device) -> None:
    """A one-line error for a precision this device cannot train in."""
    if precision not in ("fp32", *AUTOCAST_DTYPES):
        raise EdgekdError(f"unknown precision {precision!r}; choose fp32, bf16 or fp16")
    if precision == "fp16" and device.type != "cuda":
        raise EdgekdError(f"precision fp16 needs a CUDA device (this run uses {device}); use bf16 or fp32 on CPU")


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for bf16/fp16 on ``device``; a no-op context for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for fp16 (disabled, a pass-through, for fp32 and bf16, whose range is float32's)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def use_channels_last(setting: bool | None, device: torch.device) -> bool:
    """Whether to train in channels_last. An explicit setting wins. Unset (auto): on, on CUDA (cuDNN's
    tensor-core convolutions are NHWC) and on CPU, where benchmarks/train_throughput.py and a probe
    measured it faster for every model tried (resnet8/20, mobilenetv2, cnn_small/medium; README,
    "Training speed"). ``device`` is kept for a device type where that ever differs."""
    if setting is not None:
        return bool(setting)
    return device.type in ("cpu", "cuda")


def to_memory_format(model: nn.Module | None, channels_last: bool) -> None:
    """Move ``model``'s 4-d parameters and buffers to channels_last (or back to contiguous), in place."""
    if model is not None:
        model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def batch_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A 4-d batch in channels_last when asked; other tensors unchanged."""
    if channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def compiled(model: nn.Module | None, enabled: bool):
    """``torch.compile(model)`` when enabled, else ``model``."""
    if model is None or not enabled:
        return model
    return torch.compile(model)


def _map_tensors(taps: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``fn`` of every tensor in ``taps`` (dicts, lists and tuples walked; anything else as it is)."""
    if isinstance(taps, torch.Tensor):
        return fn(taps)
    if isinstance(taps, dict):
        return {k: _map_tensors(v, fn) for k, v in taps.items()}
    if isinstance(taps, (list, tuple)):
        return type(taps)(_map_tensors(v, fn) for v in taps)
    return taps


def _float32(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.is_floating_point() else t


def _ordinary_float32(t: torch.Tensor) -> torch.Tensor:
    t = _float32(t)
    return t.clone() if t.is_inference() else t


def float_taps(taps: Any) -> Any:
    """Taps with every floating tensor in float32 (dicts and lists walked), for float32 losses."""
    return _map_tensors(taps, _float32)


def from_inference(taps: Any) -> Any:
    """Taps made under ``torch.inference_mode`` as ordinary float32 tensors (one copy each), so that
    autograd may save them (a trainable head on the teacher's side)."""
    return _map_tensors(taps, _ordinary_float32)
