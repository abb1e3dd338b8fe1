"""The runtimes by name: the one table ``edgekd bench --runtime NAME`` reads.

Each runtime class lives with its runtime (``onnxruntime/``, ``tensorrt/``, ``torch_eager.py``) and
imports only ``base``; this table imports them, so nothing imports back. ``base.RUNTIME_NAMES``
lists the same names without importing any runtime, for config validation.
"""

from __future__ import annotations

from edgekd.errors import EdgekdError
from edgekd.runtimes.base import RUNTIME_NAMES, Runtime
from edgekd.runtimes.onnxruntime.runtime import OnnxRuntimeCPU, OnnxRuntimeCUDA, OnnxRuntimeTensorRT
from edgekd.runtimes.tensorrt.runtime import TensorRTEngine
from edgekd.runtimes.torch_eager import TorchCPU, TorchCUDA

RUNTIMES: dict[str, type[Runtime]] = {
    cls.name: cls for cls in (OnnxRuntimeCPU, OnnxRuntimeCUDA, OnnxRuntimeTensorRT, TorchCPU, TorchCUDA, TensorRTEngine)
}
assert tuple(sorted(RUNTIMES)) == tuple(sorted(RUNTIME_NAMES)), "base.RUNTIME_NAMES and the table disagree"


def get_runtime(name: str) -> Runtime:
    if name not in RUNTIMES:
        raise EdgekdError(f"unknown runtime {name!r}; choose from {', '.join(RUNTIME_NAMES)}")
    return RUNTIMES[name]()
