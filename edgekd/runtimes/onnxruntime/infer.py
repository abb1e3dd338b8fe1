"""Run an ONNX Runtime session on a batch of any size.

A model exported with a dynamic batch takes the whole batch at once. A model with a fixed batch
(``dynamic_batch=False``) is fed in chunks of that size, the last chunk padded with zeros and its
padding dropped from the result, so callers never have to know how the file was exported.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
}


def input_dtype(session: ort.InferenceSession) -> np.dtype:
    """The numpy dtype of the session's first input (float32 when it is not a float type we know)."""
    return np.dtype(_ORT_TYPES.get(session.get_inputs()[0].type, np.float32))


def fixed_batch(session: ort.InferenceSession) -> int | None:
    """The batch size the graph is fixed to, or None when its first axis is dynamic."""
    shape = session.get_inputs()[0].shape
    first = shape[0] if shape else None
    return first if isinstance(first, int) and first > 0 else None


def run_onnx(session: ort.InferenceSession, images: np.ndarray) -> np.ndarray:
    """First output of ``session`` on ``images`` (N, ...) as an array with N rows."""
    name = session.get_inputs()[0].name
    x = np.ascontiguousarray(images, dtype=input_dtype(session))
    batch = fixed_batch(session)
    if batch is None or batch == x.shape[0]:
        return np.asarray(session.run(None, {name: x})[0])
    outputs = []
    for start in range(0, x.shape[0], batch):
        chunk = x[start : start + batch]
        real = chunk.shape[0]
        if real < batch:
            pad = np.zeros((batch - real, *chunk.shape[1:]), dtype=chunk.dtype)
            chunk = np.concatenate([chunk, pad])
        outputs.append(np.asarray(session.run(None, {name: chunk})[0])[:real])
    return np.concatenate(outputs)
