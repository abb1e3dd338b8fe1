"""ONNX Runtime's own static PTQ (``quantize_static``), the baseline the INT8 export is measured against.

QDQ format, uint8 activations, int8 per-channel weights, MinMax calibration: the configuration the
issue names, fed the same (normalised) calibration images as edgekd's own calibration.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def ort_quantize_static(fp32_onnx: str | Path, out: str | Path, images: np.ndarray, *, batch_size: int = 64) -> Path:
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    input_name = ort.InferenceSession(str(fp32_onnx), providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(
                [{input_name: images[i : i + batch_size].astype(np.float32)} for i in range(0, len(images), batch_size)]
            )

        def get_next(self):
            return next(self.batches, None)

    quantize_static(
        str(fp32_onnx),
        str(out),
        _Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        calibrate_method=CalibrationMethod.MinMax,
    )
    return Path(out)
