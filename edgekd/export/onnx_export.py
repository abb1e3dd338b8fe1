"""Export a PyTorch classifier to an ONNX file and check it with the ONNX checker.

Uses the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``): it keeps the opset
we ask for (the dynamo exporter starts at opset 18 on torch 2.14 and cannot down-convert a
ReduceMean with axes-as-input to 17) and it exports fake quantization as QuantizeLinear /
DequantizeLinear (DESIGN.md, dependency notes). It accepts a plain module, a
``torch.jit.ScriptModule`` and the module of a ``torch.export.ExportedProgram`` (or the program
itself). The file is written to a temporary name, checked, and only then renamed into place.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.export.parity import check_parity
from edgekd.io import atomic_write
from edgekd.models.prepare import cpu_eval_copy, exported_batch, is_exported_module, supports_train

__all__ = ["check_parity", "export_onnx"]  # check_parity lives in parity.py; re-exported for convenience

# Warnings the legacy exporter prints on every call; they are about torch's roadmap, not the user's model.
_NOISE = (
    r".*legacy TorchScript-based ONNX export.*",
    r".*The feature will be removed.*",
    r".*no signature found for.*",
)
# The input guards that torch.export inserts warn when traced; they hold for the traced example.
_GUARD_NOISE = r".*Converting a tensor to a Python boolean.*"


def _first_line(err: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message (without the exporter's graph dump), or its type."""
    for line in str(err).splitlines():
        line = line.split(" [Caused by", 1)[0].strip()
        if line:
            return line if len(line) <= limit else line[: limit - 3] + "..."
    return type(err).__name__


def _validate_shape(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Check that ``input_shape`` is (C, H, W) with positive sizes."""
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise EdgekdError(f"input_shape must be (channels, height, width), got {shape}; pass e.g. (3, 32, 32)")
    return shape  # type: ignore[return-value]


def _trace_batch(model: nn.Module, name: str, dynamic_batch: bool, batch_size: int) -> int:
    """The batch size of the example input used for tracing.

    A dynamic export traces at batch 2 (batch 1 invites size-1 specialisation); a static one at
    ``batch_size``, or at the batch a ``torch.export`` graph was frozen to.
    """
    frozen = exported_batch(model)
    if frozen is None:
        return 2 if dynamic_batch else batch_size
    if dynamic_batch:
        raise EdgekdError(
            f"{name} was made by torch.export with a fixed batch of {frozen}, so its ONNX cannot take other "
            "batch sizes; re-run torch.export with dynamic_shapes={0: torch.export.Dim('batch')} on the "
            "input, or export with dynamic_batch=False"
        )
    return frozen


def export_onnx(
    model: nn.Module | torch.export.ExportedProgram,
    path: str | os.PathLike,
    *,
    input_shape: tuple[int, int, int],
    opset: int = 17,
    dynamic_batch: bool = True,
    input_name: str = "input",
    output_name: str = "logits",
    batch_size: int = 1,
) -> Path:
    """Export ``model`` (CPU, eval mode, on a copy) to ONNX at ``path`` and run the full ONNX checker.

    ``input_shape`` is (C, H, W) of one float image. With ``dynamic_batch`` the first axis of the
    input and of the output is named ``batch``; without it the graph is fixed to ``batch_size``.
    Returns the path. Raises ``EdgekdError`` (one line) when the export or the checker fails.
    """
    shape = _validate_shape(input_shape)
    name = type(model).__name__
    if batch_size < 1:
        raise EdgekdError(f"batch_size must be at least 1, got {batch_size}; pass a positive batch size")
    prepared = cpu_eval_copy(model)
    batch = _trace_batch(prepared, name, dynamic_batch, batch_size)
    example = torch.randn((batch, *shape), generator=torch.Generator().manual_seed(0))
    axes = {input_name: {0: "batch"}, output_name: {0: "batch"}} if dynamic_batch else None
    # The copy is in eval mode already; PRESERVE only where the module refuses .train() (ep.module()).
    mode = torch.onnx.TrainingMode.EVAL if supports_train(prepared) else torch.onnx.TrainingMode.PRESERVE
    noise = _NOISE + ((_GUARD_NOISE,) if is_exported_module(prepared) else ())

    def write(tmp: Path) -> None:
        try:
            with warnings.catch_warnings(), torch.no_grad():
                for pattern in noise:
                    warnings.filterwarnings("ignore", message=pattern)
                torch.onnx.export(
                    prepared,
                    (example,),
                    str(tmp),
                    dynamo=False,
                    opset_version=opset,
                    input_names=[input_name],
                    output_names=[output_name],
                    dynamic_axes=axes,
                    do_constant_folding=True,
                    training=mode,
                )
        except EdgekdError:
            raise
        except Exception as err:
            raise EdgekdError(
                f"could not export {name} to ONNX opset {opset}: {_first_line(err)}; export the model with a "
                "supported opset (--opset) or replace the unsupported layer"
            ) from err
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except Exception as err:
            raise EdgekdError(
                f"the ONNX export of {name} (opset {opset}) fails the ONNX checker: {_first_line(err)}; "
                "try another opset (--opset) or report the layer that produced the invalid node"
            ) from err

    return atomic_write(path, write)
