"""Size of an ONNX model: bytes on disk and number of stored weights (initializer elements)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import onnx

from edgekd.errors import EdgekdError


def model_size(onnx_path: str | os.PathLike) -> dict:
    """``{"bytes": file size (plus external data files), "parameters": total initializer elements}``.

    Every initializer counts, including quantization scales and zero points of a Q/DQ model.
    """
    path = Path(onnx_path)
    if not path.is_file():
        raise EdgekdError(f"ONNX file {path} does not exist; run the export stage first or fix the path")
    model = onnx.load(str(path), load_external_data=False)
    parameters = sum(math.prod(init.dims) for init in model.graph.initializer)
    external = {
        entry.value
        for init in model.graph.initializer
        if init.data_location == onnx.TensorProto.EXTERNAL
        for entry in init.external_data
        if entry.key == "location"
    }
    size = path.stat().st_size + sum(
        (path.parent / name).stat().st_size for name in external if (path.parent / name).is_file()
    )
    return {"bytes": int(size), "parameters": int(parameters)}
