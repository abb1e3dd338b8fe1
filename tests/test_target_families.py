"""Issue 20, defect 0: family names (`--target jetson`, `gpu`, `cpu`) resolve to one profile, with a reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekd.errors import EdgekdError
from edgekd.targets import load_target, resolve_target
from edgekd.targets.families import GPU_DEFAULT, JETSON_DEFAULT, detect_jetson, resolve_family


def _fake_root(tmp_path: Path, compatible: str = "", model: str = "", release: str = "", mem_gb: float = 0) -> Path:
    dt = tmp_path / "proc" / "device-tree"
    dt.mkdir(parents=True)
    if compatible:
        (dt / "compatible").write_bytes(compatible.encode() + b"\x00")
    if model:
        (dt / "model").write_bytes(model.encode() + b"\x00")
    if mem_gb:
        (tmp_path / "proc" / "meminfo").write_text(f"MemTotal:       {int(mem_gb * 1024**2)} kB\n")
    if release:
        (tmp_path / "etc").mkdir()
        (tmp_path / "etc" / "nv_tegra_release").write_text(release)
    return tmp_path


@pytest.mark.parametrize(
    ("compatible", "model", "mem", "release", "expected"),
    [
        (
            "nvidia,p3768-0000+p3767-0005\x00nvidia,p3767-0005\x00nvidia,tegra234",
            "NVIDIA Jetson Orin Nano Developer Kit",
            7.4,
            "",
            "jetson-orin-nano-8gb",
        ),
        ("nvidia,p3768-0000+p3767-0004\x00nvidia,tegra234", "", 3.6, "", "jetson-orin-nano-4gb"),
        (
            "nvidia,p3737-0000+p3701-0005\x00nvidia,tegra234",
            "NVIDIA Jetson AGX Orin Developer Kit",
            61,
            "",
            "jetson-agx-orin-64gb",
        ),
        ("nvidia,p3509-0000+p3767-0000\x00nvidia,tegra234", "", 15, "", "jetson-orin-nx-16gb"),
        ("nvidia,jetson-xavier\x00nvidia,tegra194", "NVIDIA Jetson AGX Xavier", 31, "", "jetson-agx-xavier"),
        ("nvidia,tegra194", "NVIDIA Jetson Xavier NX Developer Kit", 7.6, "", "jetson-xavier-nx"),
        ("", "", 3.9, "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64", "jetson-nano"),
        ("nvidia,tegra186", "quill", 7.8, "# R32 (release), REVISION: 7.1, BOARD: t186ref", "jetson-tx2"),
    ],
)
def test_a_jetson_is_the_module_its_device_tree_names(tmp_path, compatible, model, mem, release, expected):
    root = _fake_root(tmp_path, compatible, model, release, mem)
    choice = resolve_family("jetson", root=root)
    assert choice.name == expected, choice
    assert "this machine is a Jetson" in choice.reason
    assert resolve_family("gpu", root=root, gpu="Orin").name == expected  # a Jetson's GPU is its module


def test_off_a_jetson_the_family_is_the_stated_default(tmp_path):
    assert detect_jetson(tmp_path) is None
    choice = resolve_family("jetson", root=tmp_path)
    assert choice.name == JETSON_DEFAULT == "jetson-orin-nano-8gb"
    assert "not a Jetson" in choice.reason and "current entry module" in choice.reason


@pytest.mark.parametrize(
    ("gpu", "expected", "words"),
    [
        ("NVIDIA A100-SXM4-80GB", "a100-80gb", "GPU is NVIDIA A100"),
        ("NVIDIA A100-PCIE-40GB", "a100", "GPU is"),
        ("Tesla T4", "t4", "GPU is"),
        ("NVIDIA L4", "l4", "GPU is"),
        ("NVIDIA A10", "a10", "GPU is"),
        ("NVIDIA H100 80GB HBM3", "h100", "GPU is"),
        ("NVIDIA L40S", GPU_DEFAULT, "no bundled profile"),  # not an L4
        ("NVIDIA H200", GPU_DEFAULT, "no bundled profile"),
        (None, GPU_DEFAULT, "no NVIDIA GPU is visible"),
    ],
)
def test_gpu_family_is_the_local_gpu(tmp_path, gpu, expected, words):
    choice = resolve_family("gpu", root=tmp_path, gpu=gpu)
    assert choice.name == expected and words in choice.reason, choice


def test_cpu_family_is_this_host(monkeypatch):
    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    assert resolve_family("cpu").name == "arm-cpu"
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    assert resolve_family("cpu").name == "x86-cpu"


def test_family_names_load_and_say_why(monkeypatch):
    monkeypatch.setattr("edgekd.targets.families.detect_jetson", lambda root=None: None)
    profile, why = resolve_target(" Jetson ")
    assert profile.name == "jetson-orin-nano-8gb" and why.startswith("--target jetson -> jetson-orin-nano-8gb: ")
    assert load_target("jetson") is profile
    assert resolve_target("cpu")[0].kind == "cpu"
    assert resolve_target("jetson-orin-nano")[1] is None  # a module names itself


def test_suggestions_rank_current_modules_first():
    with pytest.raises(EdgekdError) as err:
        load_target("jetsn")
    hint = str(err.value).split("known targets")[0]
    assert "'jetson'" in hint and "jetson-orin" in hint
    assert "jetson-tx2" not in hint and "'jetson-nano'" not in hint  # modules JetPack 6 dropped come last
    with pytest.raises(EdgekdError, match="did you mean 'jetson' or 'jetson-tx2'"):
        load_target("jetson-tx")  # ... unless it is clearly what was typed


def test_compress_target_jetson_records_the_module_and_why(int8_run):
    """`edgekd compress --teacher ckpt.pt --target jetson` (the shared int8_run fixture) runs on the default module."""
    manifest = json.loads((int8_run / "manifest.json").read_text())
    assert manifest["target"] == "jetson-orin-nano-8gb"
    assert "not a Jetson" in manifest["target_profile"]["chosen"]
    assert "target: jetson-orin-nano-8gb\n" in (int8_run / "config.yaml").read_text()  # a resume is the same run
    assert (
        "- Target: jetson-orin-nano-8gb (--target jetson -> jetson-orin-nano-8gb: "
        in (int8_run / "report.md").read_text()
    )
