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
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "avx_vnni_int8")

ISA_DESCRIPTIONS = {
    "x86-64-vnni": "x86-64 with VNNI",
    "x86-64-avx512": "x86-64 with AVX-512, no VNNI",
    "x86-64-avx2": "x86-64 with AVX2, no VNNI",
    "x86-64": "x86-64 without AVX2",
    "arm64": "ARM64",
    "unknown": "an unknown processor",
}


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


# ---- instruction set (which INT8 kernels ONNX Runtime runs: edgekd/runtimes/onnxruntime/int8_encoding.py)
def isa_from_flags(flags: set[str] | frozenset[str], machine: str) -> str:
    """The instruction-set class (a key of ``ISA_DESCRIPTIONS``) of a CPU with these /proc/cpuinfo flags."""
    machine = machine.lower()
    if machine in ("aarch64", "arm64"):
        return "arm64"
    if machine not in ("x86_64", "amd64"):
        return "unknown"
    if any(flag in flags for flag in VNNI_FLAGS):
        return "x86-64-vnni"
    if "avx512bw" in flags or "avx512f" in flags:
        return "x86-64-avx512"
    if "avx2" in flags:
        return "x86-64-avx2"
    return "x86-64"


def host_cpu_flags(cpuinfo: Path = _CPUINFO) -> frozenset[str]:
    """The feature flags of this host's first CPU (x86 ``flags``, ARM ``Features``); empty if unknown."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def _cpuid_features() -> frozenset[str] | None:
    """x86 features as NumPy read them with CPUID at import (what ONNX Runtime's own dispatch sees,
    also under an emulator), in /proc/cpuinfo spelling; None where NumPy does not say."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # numpy < 2
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as features
        except ImportError:
            return None
    names = {"AVX2": "avx2", "AVX512F": "avx512f", "AVX512BW": "avx512bw", "AVX512VNNI": "avx512_vnni"}
    if not any(features.get(k) is not None for k in names):
        return None
    return frozenset(flag for key, flag in names.items() if features.get(key))


def host_isa() -> str:
    """This host's instruction-set class.

    ``EDGEKD_HOST_ISA`` (a key of ``ISA_DESCRIPTIONS``) overrides it. On x86 the CPUID bits NumPy
    read decide, since /proc/cpuinfo can describe another CPU than the one running the code (QEMU
    user mode shows the host's); ``avx_vnni`` (AVX-VNNI, which NumPy does not report) is taken from
    /proc/cpuinfo only when that file agrees with CPUID about AVX-512.
    """
    forced = os.environ.get("EDGEKD_HOST_ISA")
    if forced:
        if forced not in ISA_DESCRIPTIONS:
            raise ValueError(f"EDGEKD_HOST_ISA={forced!r} is not one of {', '.join(ISA_DESCRIPTIONS)}")
        return forced
    machine = platform.machine()
    flags = host_cpu_flags()
    cpuid = _cpuid_features() if machine.lower() in ("x86_64", "amd64") else None
    if cpuid is not None:
        agree = ("avx512f" in flags) == ("avx512f" in cpuid)
        flags = cpuid | ({"avx_vnni"} & flags if agree else set())
    return isa_from_flags(flags, machine)
