"""ONNX Runtime as a bench runtime: CPU, CUDA and TensorRT execution providers.

Sessions are made by ``make_session`` (ORT_ENABLE_ALL, sequential, ``threads`` intra-op threads).
The CPU runtime benches the INT8 model in its ONNX Runtime flavour (``model_int8_cpu.onnx``, uint8
activations): on x86 CPUs the TensorRT flavour (symmetric int8 activations) runs slower than FP32
in ONNX Runtime (DESIGN.md, dependency notes), so it says nothing about the target. The TensorRT
execution provider runs the TensorRT flavour, as TensorRT itself would.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnxruntime as ort

from edgekd.errors import EdgekdError
from edgekd.host import physical_cores
from edgekd.runtimes.base import Candidate, ModelFiles, Runner, Runtime, cuda_unavailable
from edgekd.runtimes.onnxruntime.infer import fixed_batch, input_dtype, run_onnx
from edgekd.runtimes.onnxruntime.session import make_session


class OrtRunner(Runner):
    def __init__(self, candidate: Candidate, *, threads: int | None, providers: list):
        if all(isinstance(p, str) for p in providers):
            self.session = make_session(candidate.path, threads=threads, providers=providers)
        else:  # (name, options) pairs: the same session options, with provider options
            self.session = ort.InferenceSession(
                str(candidate.path), sess_options=_options(threads), providers=providers
            )
        self.candidate = candidate
        self.provider = self.session.get_providers()[0]
        self.device = "cpu" if self.provider == "CPUExecutionProvider" else "cuda"

    def predict(self, x: np.ndarray) -> np.ndarray:
        return run_onnx(self.session, x)

    def timer(self, x: np.ndarray) -> Callable[[], None]:
        fixed = fixed_batch(self.session)
        if fixed is not None and fixed != x.shape[0]:
            raise EdgekdError(
                f"{self.candidate.path} is exported with a fixed batch of {fixed}, not {x.shape[0]}; "
                "export it with a dynamic batch or bench only that batch size (--batch)"
            )
        feed = {self.session.get_inputs()[0].name: x.astype(input_dtype(self.session), copy=False)}
        session = self.session
        return lambda: session.run(None, feed)  # outputs come back to host memory: synchronised

    def close(self) -> None:
        del self.session


def _options(threads: int | None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or physical_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


def _fp32(models: ModelFiles) -> list[Candidate]:
    return [Candidate(name, "onnx-fp32", path) for name, path in models.onnx_fp32.items()]


def _provider_missing(provider: str) -> str | None:
    available = ort.get_available_providers()
    if provider not in available:
        return f"this onnxruntime build has no {provider} (it has {', '.join(available)}); install onnxruntime-gpu"
    return None


class _OrtRuntime(Runtime):
    """An ONNX Runtime execution provider: ``provider`` (None: the CPU's, always there) runs the FP32 models."""

    provider: str | None = None

    def unavailable(self):
        return _provider_missing(self.provider) if self.provider else None

    def candidates(self, models):
        return _fp32(models)

    def open(self, candidate, models, *, threads):
        return OrtRunner(candidate, threads=threads, providers=[self.provider or "CPUExecutionProvider"])


class OnnxRuntimeCPU(_OrtRuntime):
    name = "onnxruntime"

    def candidates(self, models: ModelFiles) -> list[Candidate]:
        out = _fp32(models)
        if models.int8_cpu is not None:
            note = "ONNX Runtime CPU flavour (uint8 activations)"
            if models.target_kind != "cpu":
                note += "; the target's bundle ships the TensorRT flavour, built into an engine on the device"
            out.append(Candidate("student", "onnx-int8", models.int8_cpu, note))
        elif models.int8_trt is not None:
            note = "TensorRT flavour (symmetric int8) run by ONNX Runtime on the CPU, often slower than FP32 here"
            out.append(Candidate("student", "onnx-int8", models.int8_trt, note))
        return out


class OnnxRuntimeCUDA(_OrtRuntime):
    name = "onnxruntime-cuda"
    device = "cuda"
    provider = "CUDAExecutionProvider"


class OnnxRuntimeTensorRT(_OrtRuntime):
    name = "onnxruntime-tensorrt"
    device = "cuda"
    provider = "TensorrtExecutionProvider"

    def unavailable(self):
        return super().unavailable() or cuda_unavailable()

    def candidates(self, models):
        out = _fp32(models)
        if models.int8_trt is not None:
            out.append(Candidate("student", "onnx-int8", models.int8_trt, "TensorRT flavour (symmetric int8 Q/DQ)"))
        return out

    def open(self, candidate, models, *, threads):
        options = {"trt_fp16_enable": True}
        if candidate.format == "onnx-int8":
            options["trt_int8_enable"] = True  # explicit Q/DQ: no calibration table is read
        return OrtRunner(
            candidate,
            threads=threads,
            providers=[("TensorrtExecutionProvider", options), "CUDAExecutionProvider"],
        )
