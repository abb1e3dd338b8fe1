"""Describe the machine a measurement ran on (DESIGN.md: benchmarks say which machine they ran on).

Reads ``/proc/cpuinfo`` where it exists (Linux, x86 and ARM) and falls back to ``platform``
elsewhere. Physical cores are counted as distinct (physical id, core id) pairs, capped by the CPUs
this process may use (containers often get fewer than the host has).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

_CPUINFO = Path("/proc/cpuinfo")


def _cpuinfo_blocks() -> list[dict[str, str]]:
    """``/proc/cpuinfo`` as one dict per logical CPU (empty when the file is absent)."""
    try:
        text = _CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    blocks = []
    for chunk in text.split("\n\n"):
        fields = {}
        for line in chunk.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        if fields:
            blocks.append(fields)
    return blocks


def usable_cpus() -> int:
    """Logical CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def physical_cores() -> int:
    """Physical cores available to this process (at least 1)."""
    blocks = _cpuinfo_blocks()
    cores = {(b["physical id"], b["core id"]) for b in blocks if "physical id" in b and "core id" in b}
    count = len(cores) if cores else (os.cpu_count() or 1)
    return max(1, min(count, usable_cpus()))


def cpu_model() -> str:
    """The CPU's marketing name, e.g. ``Intel(R) Xeon(R) Processor``."""
    for block in _cpuinfo_blocks():
        for key in ("model name", "Model", "Hardware", "cpu model"):
            if block.get(key):
                return block[key]
    return platform.processor() or platform.machine() or "unknown"


def gpu_name() -> str | None:
    """Name of the first CUDA GPU torch can see, or None."""
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # a broken CUDA setup must not stop a CPU measurement
        return None


def host_description() -> dict:
    """CPU model, logical/physical cores, OS, Python and ONNX Runtime versions, and the GPU if any."""
    import onnxruntime as ort

    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count() or 1,
        "usable_cores": usable_cpus(),
        "physical_cores": physical_cores(),
        "machine": platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "gpu": gpu_name(),
    }
