"""A TensorRT engine as a bench runtime (``--runtime tensorrt``).

The engine runner itself comes from the quantize/export work (branch issue5-quant):
``edgekd.bench.tensorrt_runtime`` with ``run_engine(engine_path, x) -> logits`` and
``time_engine(engine_path, batch_size, runs, warmup)``. This file wires the runtime name to it and
skips, with the reason, where it cannot run: no ``tensorrt`` package, no CUDA GPU, that module not
present yet, or no engine built on this machine (an engine only fits the GPU and TensorRT version
it was built with, so a run's engine is only benched where it was built: ``export/*.engine``).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable

import numpy as np

from edgekd.bench.runtimes import Candidate, Runner, Runtime, cuda_unavailable, register_runtime


def _engine_module():
    return importlib.import_module("edgekd.bench.tensorrt_runtime")


class EngineRunner(Runner):
    device = "cuda"

    def __init__(self, candidate: Candidate):
        self.path = candidate.path
        self.module = _engine_module()
        import tensorrt

        self.provider = f"tensorrt {tensorrt.__version__}"

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.module.run_engine(self.path, x))

    def timer(self, x: np.ndarray) -> Callable[[], None]:
        return lambda: self.module.run_engine(self.path, x)

    def time_runs(self, batch_size: int, runs: int, warmup: int) -> list[float]:
        """Seconds per run from the engine module's own timer (one deserialised engine, device buffers
        allocated once). It may return seconds or milliseconds per run, or a dict holding them."""
        out = self.module.time_engine(self.path, batch_size, runs, warmup)
        if isinstance(out, dict):
            if "times_ms" in out:
                return [t / 1e3 for t in out["times_ms"]]
            return list(out["times_s"])
        return [float(t) for t in out]


@register_runtime
class TensorRTEngine(Runtime):
    name = "tensorrt"
    device = "cuda"

    def unavailable(self):
        if importlib.util.find_spec("tensorrt") is None:
            return "the tensorrt Python package is not installed (pip install tensorrt; it needs an NVIDIA GPU)"
        if importlib.util.find_spec("edgekd.bench.tensorrt_runtime") is None:
            return "edgekd.bench.tensorrt_runtime is not in this build (it comes with the INT8/TensorRT export)"
        return cuda_unavailable()

    def candidates(self, models):
        return [Candidate(name, "tensorrt-engine", path) for name, path in models.engines.items()]

    def open(self, candidate, models, *, threads):
        return EngineRunner(candidate)
