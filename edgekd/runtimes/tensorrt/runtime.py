"""A TensorRT engine as a bench runtime (``--runtime tensorrt``).

The engine runner itself is ``edgekd.runtimes.tensorrt.engine`` (``run_engine(engine_path, x) ->
logits`` and ``time_engine(engine_path, batch_size, runs, warmup)``). This file wires the runtime
name to it and skips, with the reason, where it cannot run: no ``tensorrt`` package, no CUDA GPU,
or no engine built on this machine (an engine only fits the GPU and TensorRT version
it was built with, so a run's engine is only benched where it was built: ``export/*.engine``).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable

import numpy as np

from edgekd.runtimes.base import Candidate, Runner, Runtime, cuda_unavailable


def _engine_module():
    return importlib.import_module("edgekd.runtimes.tensorrt.engine")


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
        """Seconds per run from the engine module's own CUDA-event timer (one deserialised engine,
        device buffers allocated once): ``time_engine(...)["times_ms"]``."""
        out = self.module.time_engine(self.path, batch_size, runs, warmup)
        return [t / 1e3 for t in out["times_ms"]]


class TensorRTEngine(Runtime):
    name = "tensorrt"
    device = "cuda"

    def unavailable(self):
        if importlib.util.find_spec("tensorrt") is None:
            return "the tensorrt Python package is not installed (pip install tensorrt; it needs an NVIDIA GPU)"
        return cuda_unavailable()

    def candidates(self, models):
        return [Candidate(name, "tensorrt-engine", path) for name, path in models.engines.items()]

    def open(self, candidate, models, *, threads):
        return EngineRunner(candidate)
