"""ONNX Runtime measurement primitives: sessions, latency, accuracy.

Latency follows DESIGN.md: ONNX Runtime CPU timing varies from one InferenceSession to the next,
so each model is timed in several fresh sessions, interleaved between models (A1 B1 A2 B2 ...),
and the per-run times are pooled into medians and percentiles.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from edgekd.errors import EdgekdError
from edgekd.host import host_description, physical_cores
from edgekd.runtimes.base import top_k_accuracy
from edgekd.runtimes.onnxruntime.infer import fixed_batch, input_dtype, run_onnx
from edgekd.runtimes.onnxruntime.int8_encoding import host_model_source

__all__ = ["evaluate_accuracy", "make_session", "measure_latency"]

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


def _providers(requested: Sequence[str] | None) -> list[str]:
    """The requested providers that this onnxruntime build has, in order; error when none is left."""
    wanted = list(requested or DEFAULT_PROVIDERS)
    available = ort.get_available_providers()
    usable = [p for p in wanted if p in available]
    if not usable:
        raise EdgekdError(
            f"none of the ONNX Runtime providers {wanted} is available (this build has {available}); "
            "pass one of the available providers"
        )
    return usable


def make_session(
    onnx_path: str | os.PathLike,
    *,
    threads: int | None,
    providers: list[str] | None = None,
) -> ort.InferenceSession:
    """A fresh ONNX Runtime session for timing: ``threads`` intra-op threads (default: physical cores),
    one inter-op thread, sequential execution, all graph optimisations.
    """
    path = Path(onnx_path)
    if not path.is_file():
        raise EdgekdError(f"ONNX file {path} does not exist; run the export stage first or fix the path")
    if threads is not None and threads < 1:
        raise EdgekdError(f"threads must be at least 1, got {threads}; pass a positive number or leave it unset")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or physical_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only; warnings about unused initializers are noise here
    try:
        return ort.InferenceSession(host_model_source(path), sess_options=options, providers=_providers(providers))
    except EdgekdError:
        raise
    except Exception as err:
        lines = str(err).strip().splitlines()
        raise EdgekdError(
            f"ONNX Runtime cannot load {path}: {lines[0] if lines else type(err).__name__}; "
            "re-export the model (edgekd export) or check the file"
        ) from err


def _time_session(session: ort.InferenceSession, images: np.ndarray, *, warmup: int, runs: int) -> list[float]:
    """Run ``warmup`` untimed then ``runs`` timed inferences; seconds per run."""
    feed = {session.get_inputs()[0].name: images.astype(input_dtype(session), copy=False)}
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return times


def measure_latency(
    onnx_paths: Mapping[str, str | os.PathLike],
    *,
    batch_size: int,
    input_shape: Sequence[int],
    threads: int | None,
    warmup: int = 10,
    runs: int = 50,
    sessions: int = 3,
    seed: int = 0,
    providers: list[str] | None = None,
) -> dict[str, dict]:
    """Time every model in ``onnx_paths`` (name -> file) on one fixed random float batch.

    Each model gets ``sessions`` fresh sessions, created in the interleaved order A1 B1 A2 B2 ...;
    each session does ``warmup`` untimed runs and ``ceil(runs / sessions)`` timed runs. Returns per
    model: batch_size, runs (total timed), sessions, threads, warmup, p50/p90/p99/mean in ms,
    session_p50_ms (one median per session), throughput_ips (batch_size / median seconds), source,
    runtime, provider and host.
    """
    if batch_size < 1 or runs < 1 or sessions < 1 or warmup < 0:
        raise EdgekdError(
            f"latency settings must be positive (batch_size={batch_size}, runs={runs}, sessions={sessions}, "
            f"warmup={warmup}); pass batch_size, runs and sessions >= 1 and warmup >= 0"
        )
    shape = (batch_size, *tuple(int(d) for d in input_shape))
    images = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    per_session = math.ceil(runs / sessions)
    n_threads = threads or physical_cores()
    times: dict[str, list[float]] = {name: [] for name in onnx_paths}
    medians: dict[str, list[float]] = {name: [] for name in onnx_paths}
    provider: dict[str, str] = {}
    for _ in range(sessions):
        for name, path in onnx_paths.items():
            session = make_session(path, threads=n_threads, providers=providers)
            fixed = fixed_batch(session)
            if fixed is not None and fixed != batch_size:
                raise EdgekdError(
                    f"model {name!r} ({path}) is exported with a fixed batch of {fixed}, not {batch_size}; "
                    "export it with a dynamic batch or measure at its batch size"
                )
            run_times = _time_session(session, images, warmup=warmup, runs=per_session)
            provider[name] = session.get_providers()[0]
            del session
            times[name].extend(run_times)
            medians[name].append(float(np.median(run_times)) * 1e3)
    host = host_description()
    results: dict[str, dict] = {}
    for name in onnx_paths:
        ms = np.asarray(times[name]) * 1e3
        p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
        results[name] = {
            "batch_size": batch_size,
            "runs": int(ms.size),
            "sessions": sessions,
            "threads": n_threads,
            "warmup": warmup,
            "p50_ms": p50,
            "p90_ms": p90,
            "p99_ms": p99,
            "mean_ms": float(ms.mean()),
            "session_p50_ms": medians[name],
            "throughput_ips": batch_size / (p50 / 1e3) if p50 > 0 else float("inf"),
            "source": "measured",
            "runtime": "onnxruntime",
            "provider": provider[name],
            "host": host,
        }
    return results


def evaluate_accuracy(
    onnx_path: str | os.PathLike,
    batches: Iterable[tuple[torch.Tensor | np.ndarray, torch.Tensor | np.ndarray]],
    *,
    threads: int | None = None,
    providers: list[str] | None = None,
) -> dict:
    """Top-1 (and top-5 when there are more than 5 classes) accuracy of an ONNX classifier.

    ``batches`` yields (images NCHW float, integer labels). Returns ``{"top1", "samples"}`` with
    accuracies as fractions in 0..1, plus ``"top5"`` when the model has more than 5 classes.
    """
    session = make_session(onnx_path, threads=threads, providers=providers)
    empty = f"no images to evaluate {onnx_path} on; pass a non-empty evaluation set"
    return top_k_accuracy(lambda x: run_onnx(session, x), batches, empty=empty)
