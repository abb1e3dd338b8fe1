"""Latency, throughput, peak memory and accuracy of candidates through any runtime's runners.

Timing follows DESIGN.md: a runner's timing varies from one session to the next, so every
candidate is opened ``sessions`` times, the sessions interleaved between candidates
(A1 B1 A2 B2 ...), each with ``warmup`` untimed runs and ``ceil(runs / sessions)`` timed runs on
one fixed random batch; per-run times are pooled into p50/p90/p99. Every record carries
``source: "measured"`` (the latency model of the search stage adds "lut"/"roofline" estimates).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence

import numpy as np

from edgekd.bench.memory import PeakMemory
from edgekd.errors import EdgekdError
from edgekd.runtimes.base import Candidate, ModelFiles, Runtime, top_k_accuracy


def time_candidates(
    runtime: Runtime,
    candidates: Sequence[Candidate],
    models: ModelFiles,
    *,
    batch_size: int,
    input_shape: Sequence[int],
    threads: int | None,
    warmup: int,
    runs: int,
    sessions: int,
    seed: int = 0,
) -> dict[tuple[str, str], dict]:
    """Time each candidate at ``batch_size``; returns ``{candidate.key: record}``."""
    if batch_size < 1 or runs < 1 or sessions < 1 or warmup < 0:
        raise EdgekdError(
            f"latency settings must be positive (batch {batch_size}, runs {runs}, sessions {sessions}, "
            f"warmup {warmup}); pass batch, runs and sessions >= 1 and warmup >= 0"
        )
    x = np.random.default_rng(seed).standard_normal((batch_size, *input_shape)).astype(np.float32)
    per_session = math.ceil(runs / sessions)
    times: dict = {c.key: [] for c in candidates}
    medians: dict = {c.key: [] for c in candidates}
    peak: dict = {c.key: [] for c in candidates}
    added: dict = {c.key: [] for c in candidates}
    gpu_peak: dict = {c.key: [] for c in candidates}
    provider: dict = {}
    for _ in range(sessions):
        for cand in candidates:
            with PeakMemory() as mem:
                runner = runtime.open(cand, models, threads=threads)
                try:
                    if runner.time_runs is not None:
                        run_times = runner.time_runs(batch_size, per_session, warmup)
                    else:
                        once = runner.timer(x)
                        for _ in range(warmup):
                            once()
                        run_times = []
                        for _ in range(per_session):
                            start = time.perf_counter()
                            once()
                            run_times.append(time.perf_counter() - start)
                    provider[cand.key] = runner.provider
                    gpu_peak[cand.key].append(runner.gpu_peak_mib())
                finally:
                    runner.close()
                    del runner
            times[cand.key].extend(run_times)
            medians[cand.key].append(float(np.median(run_times)) * 1e3)
            peak[cand.key].append(mem.peak_mib)
            added[cand.key].append(mem.added_mib)
    out = {}
    for cand in candidates:
        ms = np.asarray(times[cand.key]) * 1e3
        p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
        host_peaks = [p for p in peak[cand.key] if p is not None]
        host_added = [p for p in added[cand.key] if p is not None]
        gpu_peaks = [p for p in gpu_peak[cand.key] if p is not None]
        out[cand.key] = {
            "batch_size": batch_size,
            "runs": int(ms.size),
            "sessions": sessions,
            "threads": threads,
            "warmup": warmup,
            "p50_ms": p50,
            "p90_ms": p90,
            "p99_ms": p99,
            "mean_ms": float(ms.mean()),
            "session_p50_ms": medians[cand.key],
            "throughput_ips": batch_size / (p50 / 1e3) if p50 > 0 else float("inf"),
            "peak_host_mib": max(host_peaks) if host_peaks else None,  # the process's peak RSS
            "peak_host_added_mib": max(host_added) if host_added else None,
            "peak_gpu_mib": max(gpu_peaks) if gpu_peaks else None,
            "source": "measured",
            "runtime": runtime.name,
            "provider": provider.get(cand.key, ""),
        }
    return out


def accuracy(runtime: Runtime, candidate: Candidate, models: ModelFiles, batches: Iterable, *, threads) -> dict:
    """Top-1 (and top-5 with more than 5 classes) of one candidate on ``batches`` of (images, labels)."""
    runner = runtime.open(candidate, models, threads=threads)
    try:
        return top_k_accuracy(
            runner.predict,
            batches,
            empty="no validation images to measure accuracy on; pass a dataset with a validation split",
        )
    finally:
        runner.close()
