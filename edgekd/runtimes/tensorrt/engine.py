"""Run and time a serialized TensorRT engine (the bench's ``tensorrt`` runtime).

Buffers are torch CUDA tensors (no cuda-python needed): inputs are copied to the GPU once, the
engine runs on a torch CUDA stream, and timing uses CUDA events around each inference (host
overhead included, as an application sees it). Works with TensorRT 8.6 (``set_binding_shape`` /
``execute_async_v2`` still present, but the tensor-name API below exists from 8.5) and 10.x
(tensor-name API only). Needs ``tensorrt`` and a GPU: anything else is a one-line ``EdgekdError``.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import EdgekdError
from edgekd.runtimes.tensorrt.build import tensorrt_available


class _Engine:
    def __init__(self, engine_path: str | os.PathLike):
        ok, why = tensorrt_available()
        if not ok:
            raise EdgekdError(f"cannot run a TensorRT engine here: {why}; bench with --runtime onnxruntime instead")
        path = Path(engine_path)
        if not path.is_file():
            raise EdgekdError(f"TensorRT engine {path} does not exist; build it with export/build_engine.sh first")
        import tensorrt as trt
        import torch

        self.trt, self.torch = trt, torch
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise EdgekdError(
                f"TensorRT could not load {path} (built for another GPU or TensorRT version?); rebuild it here"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == mode]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) != mode]
        if len(self.inputs) != 1:
            raise EdgekdError(f"engine {path} has {len(self.inputs)} inputs; edgekd runs single-input classifiers")
        self.stream = torch.cuda.Stream()

    def _dtype(self, name: str):
        return self.torch.from_numpy(np.zeros(1, dtype=self.trt.nptype(self.engine.get_tensor_dtype(name)))).dtype

    def prepare(self, x: np.ndarray) -> dict[str, Any]:
        torch = self.torch
        name = self.inputs[0]
        x_gpu = torch.from_numpy(np.ascontiguousarray(x)).to("cuda", dtype=self._dtype(name))
        self.context.set_input_shape(name, tuple(x_gpu.shape))
        self.context.set_tensor_address(name, x_gpu.data_ptr())
        buffers = {name: x_gpu}
        for out in self.outputs:
            shape = tuple(self.context.get_tensor_shape(out))
            if any(d < 0 for d in shape):
                raise EdgekdError(f"engine output {out} has an unresolved shape {shape}; rebuild with a fixed profile")
            buffers[out] = torch.empty(shape, dtype=self._dtype(out), device="cuda")
            self.context.set_tensor_address(out, buffers[out].data_ptr())
        return buffers

    def execute(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise EdgekdError("TensorRT engine execution failed; check the engine and the input shape")


def run_engine(engine_path: str | os.PathLike, x: np.ndarray) -> np.ndarray:
    """The engine's first output on ``x`` (N, C, H, W float32), as a numpy array."""
    eng = _Engine(engine_path)
    buffers = eng.prepare(x)
    eng.execute()
    eng.stream.synchronize()
    return buffers[eng.outputs[0]].float().cpu().numpy()


def time_engine(
    engine_path: str | os.PathLike, batch_size: int, runs: int = 100, warmup: int = 20, seed: int = 0
) -> dict[str, Any]:
    """Latency of the engine at ``batch_size`` on random input: p50/p90/p99/mean ms and throughput."""
    if batch_size < 1 or runs < 1 or warmup < 0:
        raise EdgekdError(f"batch_size and runs must be >= 1 and warmup >= 0 (got {batch_size}, {runs}, {warmup})")
    eng = _Engine(engine_path)
    torch = eng.torch
    shape = tuple(eng.engine.get_tensor_shape(eng.inputs[0]))[1:]
    if any(d < 0 for d in shape):
        raise EdgekdError(f"engine input {eng.inputs[0]} has dynamic non-batch dimensions {shape}; not supported")
    x = np.random.default_rng(seed).standard_normal((batch_size, *shape)).astype(np.float32)
    eng.prepare(x)
    with torch.cuda.stream(eng.stream):
        for _ in range(warmup):
            eng.execute()
        eng.stream.synchronize()
        times = []
        for _ in range(runs):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(eng.stream)
            eng.execute()
            end.record(eng.stream)
            end.synchronize()
            times.append(start.elapsed_time(end))
    ms = np.asarray(times)
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    return {
        "batch_size": batch_size,
        "runs": runs,
        "warmup": warmup,
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
        "mean_ms": float(statistics.fmean(times)),
        "times_ms": [float(t) for t in times],
        "throughput_ips": batch_size / (p50 / 1e3) if p50 > 0 else float("inf"),
        "source": "measured",
        "runtime": "tensorrt",
        "tensorrt": eng.trt.__version__,
        "gpu": torch.cuda.get_device_name(),
    }
