"""Helpers shared by the latency benchmarks (latency_model.py, latency_detect.py): interleaved ONNX
Runtime timing on a shared machine, the load it ran under, rank and error statistics, and the
estimates of another checkout of edgekd (the "before" column: the model as it was)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgekd.targets.calibrate import CLOCKS, ort_session


def measure_interleaved(
    paths: dict[str, Path],
    feeds: dict[str, Callable[[object], dict]],
    *,
    threads: int,
    rounds: int,
    runs: Callable[[str], int],
    warmup: int = 5,
    clock: str = "wall",
) -> tuple[dict[str, dict], list[float]]:
    """Batch-1 latency of every model in ``rounds`` rounds; each round opens a fresh session per model
    in turn (A1 B1 ... A2 B2 ...) so that load from other processes hits all models alike. Returns per
    model ``p50_ms`` (median of all timed runs), ``p10_ms`` (median over rounds of each round's 10th
    percentile: the least disturbed runs) and ``round_p50_ms``; and the 1-minute load average at the
    start of each round. ``clock="cpu"``: process CPU time, ORT's threads not spinning
    (edgekd.targets.calibrate.CLOCKS), which the other jobs on a shared machine do not inflate."""
    times: dict[str, list[float]] = {n: [] for n in paths}
    p10s: dict[str, list[float]] = {n: [] for n in paths}
    p50s: dict[str, list[float]] = {n: [] for n in paths}
    loads = []
    tick = CLOCKS[clock]
    for _ in range(rounds):
        loads.append(os.getloadavg()[0])
        for name, path in paths.items():
            session = ort_session(path, threads, clock)
            feed = feeds[name](session)
            for _ in range(warmup):
                session.run(None, feed)
            run_times = []
            for _ in range(runs(name)):
                start = tick()
                session.run(None, feed)
                run_times.append((tick() - start) * 1e3)
            del session
            times[name].extend(run_times)
            p10s[name].append(float(np.percentile(run_times, 10)))
            p50s[name].append(float(np.median(run_times)))
    out = {
        n: {
            "p50_ms": float(np.median(times[n])),
            "p10_ms": float(np.median(p10s[n])),
            "round_p50_ms": p50s[n],
            "round_p10_ms": p10s[n],
        }
        for n in paths
    }
    return out, loads


def rank_and_error(est: list[float], meas: list[float]) -> dict[str, float]:
    """Kendall tau and the median |relative error| of estimates against measurements."""
    from scipy.stats import kendalltau

    rel = [abs(e - m) / m for e, m in zip(est, meas, strict=True)]
    return {"kendall_tau": float(kendalltau(est, meas).statistic), "median_abs_rel_error": statistics.median(rel)}


def estimates_of_checkout(repo: Path, paths: dict[str, Path], lut: Path, target: str = "x86-cpu") -> dict[str, float]:
    """Milliseconds that the edgekd of another checkout (``repo``, e.g. main before this change)
    estimates for each ONNX model with table ``lut`` (run in a subprocess with that checkout first
    on the path)."""
    script = (
        "import json, sys\n"
        "from edgekd.targets.latency import estimate_latency\n"
        "from edgekd.targets.lut import load_table\n"
        "paths = json.loads(sys.argv[1]); table = load_table(sys.argv[2])\n"
        "print(json.dumps({n: estimate_latency(p, sys.argv[3], lut=table).ms for n, p in paths.items()}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            json.dumps({n: str(Path(p).resolve()) for n, p in paths.items()}),
            str(Path(lut).resolve()),
            target,
        ],
        env=env,
        capture_output=True,
        text=True,
        cwd=str(repo),
    )
    if done.returncode != 0:
        raise SystemExit(f"estimating with {repo} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def git_head(repo: Path) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# The "before" table on a shared machine: the other checkout's own grid and code, its ONNX Runtime
# timer replaced by the CPU-clock one of this checkout (that checkout has no --clock option).
_PROFILE_BEFORE = """
import statistics, sys, time
import numpy as np
import onnxruntime as ort
import edgekd.targets.calibrate as cal

def cpu_timer(threads, budget_s):
    def time_model(path, inputs, sessions, min_runs):
        medians = []
        for _ in range(sessions):
            o = ort.SessionOptions()
            o.intra_op_num_threads = threads or 1
            o.inter_op_num_threads = 1
            o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            o.log_severity_level = 3
            o.add_session_config_entry("session.intra_op.allow_spinning", "0")
            o.add_session_config_entry("session.inter_op.allow_spinning", "0")
            s = ort.InferenceSession(str(path), sess_options=o, providers=["CPUExecutionProvider"])
            feed = {i.name: x for i, x in zip(s.get_inputs(), inputs)}
            for _ in range(3):
                s.run(None, feed)
            times, start = [], time.perf_counter()
            while len(times) < min_runs or (time.perf_counter() - start < budget_s and len(times) < 2000):
                t0 = time.process_time(); s.run(None, feed); times.append(time.process_time() - t0)
            medians.append(float(np.percentile(times, 10)))
        return statistics.fmean(medians)
    return time_model

cal._ort_timer = cpu_timer
table = cal.run_profile("x86-cpu", grid="default", threads=int(sys.argv[2]))
table.save(sys.argv[1])
"""


def profile_checkout_cpu_clock(repo: Path, out: Path, threads: int = 1) -> None:
    """Run ``repo``'s ``edgekd profile --target x86-cpu`` (its grid, its code) timed by CPU clock."""
    env = {**os.environ, "PYTHONPATH": str(repo), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _PROFILE_BEFORE, str(Path(out).resolve()), str(threads)],
        env=env,
        capture_output=True,
        text=True,
        cwd=str(repo),
    )
    if done.returncode != 0:
        raise SystemExit(f"profiling with {repo} failed:\n{done.stderr[-2000:]}")


if __name__ == "__main__":
    # python benchmarks/latency_common.py REPO OUT.json: the before table (see profile_checkout_cpu_clock)
    profile_checkout_cpu_clock(Path(sys.argv[1]), Path(sys.argv[2]))
