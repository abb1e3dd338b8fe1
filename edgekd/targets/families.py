"""Family names: ``--target jetson``, ``gpu`` or ``cpu`` mean "this kind of machine", resolved to one profile.

- ``jetson``: on a Jetson, the module this machine is (read from the device tree, else from
  ``/etc/nv_tegra_release`` and the memory size); elsewhere :data:`JETSON_DEFAULT`, the current entry module.
- ``gpu``: the local NVIDIA GPU when it has a bundled profile (a Jetson's integrated GPU is its
  module); else :data:`GPU_DEFAULT`, stated as such.
- ``cpu``: this host's CPU (x86-64 or ARM64).

Every choice comes with a one-line reason that the run prints and records, so nobody has to guess
which profile ``jetson`` meant. ``root`` lets tests point the probes at a fake ``/``.
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass
from pathlib import Path

FAMILIES = ("jetson", "gpu", "cpu")
JETSON_DEFAULT = "jetson-orin-nano-8gb"  # the current entry module (Orin Nano 8GB, the developer kit's)
GPU_DEFAULT = "l4"  # the current entry data-centre inference GPU
CPU_PROFILES = {"x86_64": "x86-cpu", "amd64": "x86-cpu", "aarch64": "arm-cpu", "arm64": "arm-cpu"}

# Module part numbers in /proc/device-tree/compatible (NVIDIA Jetson module data sheets / L4T DTBs).
_PART_NUMBERS = {
    "p3767-0000": "jetson-orin-nx-16gb",
    "p3767-0001": "jetson-orin-nx-8gb",
    "p3767-0003": "jetson-orin-nano-8gb",
    "p3767-0004": "jetson-orin-nano-4gb",
    "p3767-0005": "jetson-orin-nano-8gb",  # the developer kit's module
    "p3701-0004": "jetson-agx-orin-32gb",
    "p3701-0005": "jetson-agx-orin-64gb",
    "p2888": "jetson-agx-xavier",
    "p3668": "jetson-xavier-nx",
    "p3448": "jetson-nano",
    "p3310": "jetson-tx2",
    "p3489": "jetson-tx2",
    "p3636": "jetson-tx2",
}
# Words of /proc/device-tree/model, most specific first; the memory size picks the variant.
_MODEL_WORDS: tuple[tuple[str, tuple[tuple[float, str], ...]], ...] = (
    ("orin nano", ((6.0, "jetson-orin-nano-4gb"), (1e9, "jetson-orin-nano-8gb"))),
    ("orin nx", ((12.0, "jetson-orin-nx-8gb"), (1e9, "jetson-orin-nx-16gb"))),
    ("agx orin", ((48.0, "jetson-agx-orin-32gb"), (1e9, "jetson-agx-orin-64gb"))),
    ("xavier nx", ((1e9, "jetson-xavier-nx"),)),
    ("agx xavier", ((1e9, "jetson-agx-xavier"),)),
    ("tx2", ((1e9, "jetson-tx2"),)),
    ("nano", ((1e9, "jetson-nano"),)),
)
# The SoC in nv_tegra_release's BOARD/family line, when the device tree says nothing more.
_SOCS = {"t234": "orin", "t194": "xavier", "t186": "tx2", "t210": "nano"}


@dataclass(frozen=True)
class FamilyChoice:
    name: str  # the bundled profile chosen
    reason: str  # one line: why this one


def _read(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8", errors="replace").replace("\x00", " ").strip()
    except OSError:
        return None


def _memory_gb(root: Path) -> float | None:
    text = _read(root / "proc" / "meminfo") or ""
    match = re.search(r"MemTotal:\s+(\d+)\s+kB", text)
    return int(match.group(1)) / 1024**2 if match else None


def _by_memory(variants: tuple[tuple[float, str], ...], mem: float | None) -> str:
    if mem is None:
        return variants[-1][1]
    return next(name for limit, name in variants if mem < limit)


def detect_jetson(root: Path = Path("/")) -> FamilyChoice | None:
    """The Jetson module this machine is, with the evidence; None when it is not a Jetson."""
    compatible = (_read(root / "proc" / "device-tree" / "compatible") or "").lower()
    model = _read(root / "proc" / "device-tree" / "model") or ""
    release = _read(root / "etc" / "nv_tegra_release")
    for part, name in _PART_NUMBERS.items():
        if part in compatible:
            return FamilyChoice(name, f"this machine is a Jetson ({model or part}; device tree names module {part})")
    if "p3701" in compatible:  # AGX Orin variants beyond the two part numbers above: by memory
        mem = _memory_gb(root)
        name = _by_memory(dict(_MODEL_WORDS)["agx orin"], mem)
        return FamilyChoice(name, f"this machine is a Jetson AGX Orin ({model or 'p3701'}, {mem or '?'} GB memory)")
    lowered = model.lower()
    if "jetson" in lowered or "nvidia,tegra" in compatible or release:
        mem = _memory_gb(root)
        for words, variants in _MODEL_WORDS:
            if words in lowered:
                name = _by_memory(variants, mem)
                mem_text = f", {mem:.1f} GB memory" if mem is not None else ""
                return FamilyChoice(name, f"this machine is a Jetson (device tree model {model!r}{mem_text})")
        soc = next((s for key, s in _SOCS.items() if key in compatible or key in (release or "").lower()), None)
        if soc in ("xavier", "tx2", "nano"):
            name = {"xavier": "jetson-xavier-nx", "tx2": "jetson-tx2", "nano": "jetson-nano"}[soc]
            if soc == "xavier" and mem is not None and mem > 10:
                name = "jetson-agx-xavier"
            return FamilyChoice(
                name, f"this machine is a Jetson ({soc} SoC per /etc/nv_tegra_release or the device tree)"
            )
        if soc == "orin":
            name = _by_memory(
                ((6.0, "jetson-orin-nano-4gb"), (12.0, "jetson-orin-nano-8gb"), (1e9, "jetson-agx-orin-64gb")), mem
            )
            return FamilyChoice(
                name, f"this machine is a Jetson Orin (module not named; chosen by its memory, {mem} GB)"
            )
        return FamilyChoice(
            JETSON_DEFAULT,
            f"this machine looks like a Jetson ({model or 'nv_tegra_release'}) but its module is not recognised; "
            f"using the default {JETSON_DEFAULT}",
        )
    return None


def _gpu_profile(gpu: str) -> str | None:
    """The bundled profile of an NVIDIA GPU by its name (``NVIDIA A100-SXM4-80GB`` -> ``a100-80gb``)."""
    tokens = {t.upper() for t in re.split(r"[^A-Za-z0-9]+", gpu) if t}
    if "A100" in tokens:
        return "a100-80gb" if "80GB" in tokens else "a100"
    for token, name in (("H100", "h100"), ("A10", "a10"), ("L4", "l4"), ("T4", "t4")):
        if token in tokens:
            return name
    return None


def resolve_family(family: str, root: Path = Path("/"), gpu: str | None | bool = True) -> FamilyChoice:
    """Resolve ``jetson``, ``gpu`` or ``cpu`` on this machine. ``gpu=True``: ask torch for the local GPU."""
    if family == "jetson":
        found = detect_jetson(root)
        if found is not None:
            return found
        return FamilyChoice(
            JETSON_DEFAULT,
            "this machine is not a Jetson (no Jetson module in /proc/device-tree, no /etc/nv_tegra_release), so "
            f"the default: {JETSON_DEFAULT}, the current entry module; name a module (e.g. --target "
            "jetson-agx-orin-64gb, see `edgekd targets`) to model another",
        )
    if family == "gpu":
        jetson = detect_jetson(root)
        if jetson is not None:
            return FamilyChoice(jetson.name, f"the GPU here is a Jetson's: {jetson.reason}")
        if gpu is True:
            from edgekd.host import gpu_name

            gpu = gpu_name()
        if not gpu:
            return FamilyChoice(
                GPU_DEFAULT,
                f"no NVIDIA GPU is visible here, so the default: {GPU_DEFAULT}, the current entry data-centre GPU; "
                "name one (a10, a100, h100, l4, t4) to model another",
            )
        name = _gpu_profile(str(gpu))
        if name is not None:
            return FamilyChoice(name, f"this machine's GPU is {gpu}")
        return FamilyChoice(
            GPU_DEFAULT,
            f"this machine's GPU ({gpu}) has no bundled profile, so the default: {GPU_DEFAULT}; pass the path of "
            "your own profile YAML for figures that match it",
        )
    if family == "cpu":
        machine = platform.machine().lower()
        name = CPU_PROFILES.get(machine)
        if name is not None:
            return FamilyChoice(name, f"this host's CPU is {machine}")
        return FamilyChoice(
            "x86-cpu", f"this host's CPU ({machine or 'unknown'}) has no profile, so the default x86-cpu"
        )
    raise ValueError(f"{family!r} is not a target family ({', '.join(FAMILIES)})")
