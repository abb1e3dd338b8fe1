"""Target profiles: every bundled profile loads, cites its figures, and bad input fails clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekd.errors import EdgekdError
from edgekd.targets import NUMERIC_FIELDS, TargetProfile, list_targets, load_target, target_names

# issue 4, section 1: every target the issue lists
REQUIRED = [
    "jetson-nano",
    "jetson-tx2",
    "jetson-xavier-nx",
    "jetson-agx-xavier",
    "jetson-orin-nano-4gb",
    "jetson-orin-nano-8gb",
    "jetson-orin-nano-super",
    "jetson-orin-nx-8gb",
    "jetson-orin-nx-16gb",
    "jetson-agx-orin-32gb",
    "jetson-agx-orin-64gb",
    "t4",
    "a10",
    "l4",
    "a100",
    "h100",
    "x86-cpu",
    "arm-cpu",
]

CUSTOM = """
name: my-board
kind: jetson
runtime: tensorrt
precision: int8
int8_tops_dense: 12
memory_bandwidth_gbs: 50
compute_capability: 8.7
jetpack: [6.2]
tensorrt: ["10.3"]
cuda: ["12.6"]
sources:
  int8_tops_dense: "my measurement"
"""


@pytest.mark.parametrize("name", REQUIRED)
def test_required_target_loads(name: str) -> None:
    profile = load_target(name)
    assert isinstance(profile, TargetProfile)
    assert profile.name == name
    assert name in target_names()
    if profile.kind != "cpu" or name != "x86-cpu":  # x86-cpu is "this machine": figures come from the host
        assert profile.memory_bandwidth_gbs
        assert profile.fp16_tflops or profile.fp32_tflops


def test_every_known_figure_cites_a_source() -> None:
    for profile in list_targets():
        for field in NUMERIC_FIELDS:
            if getattr(profile, field) is not None:
                assert profile.sources.get(field, "").strip(), f"{profile.name}.{field} has no source"
        if profile.compute_capability is not None:
            assert "compute_capability" in profile.sources, profile.name


def test_estimates_are_labelled() -> None:
    # REFERENCES.md: dense FP16 ~ a quarter of sparse INT8 is an estimate; say so.
    orin = load_target("jetson-orin-nano")
    assert orin.fp16_tflops == pytest.approx(orin.int8_tops_sparse / 4)
    assert "estimate" in orin.sources["fp16_tflops"]
    for profile in list_targets():  # a figure derived rather than read off a datasheet says so
        for field, text in profile.sources.items():
            if "x 2 FLOPs" in text or "half of" in text or "quarter of" in text:
                assert "estimate" in text, f"{profile.name}.{field}: {text}"


def test_issue_figures() -> None:
    # the figures issue 4 quotes (module totals from the datasheets)
    nano8 = load_target("jetson-orin-nano-8gb")
    assert (nano8.int8_tops_dense, nano8.int8_tops_sparse, nano8.memory_bandwidth_gbs) == (20, 40, 68)
    assert load_target("jetson-orin-nano-super").memory_bandwidth_gbs == 102
    nx16 = load_target("jetson-orin-nx-16gb")
    assert (nx16.int8_tops_sparse, nx16.memory_bandwidth_gbs) == (100, 102.4)
    agx = load_target("jetson-agx-orin-64gb")
    assert (agx.int8_tops_sparse, agx.memory_bandwidth_gbs, agx.dla_cores) == (275, 204.8, 2)
    assert (load_target("jetson-xavier-nx").int8_tops_dense, load_target("jetson-xavier-nx").memory_bandwidth_gbs) == (
        21,
        59.7,
    )
    assert (
        load_target("jetson-agx-xavier").int8_tops_dense,
        load_target("jetson-agx-xavier").memory_bandwidth_gbs,
    ) == (
        32,
        136.5,
    )
    assert (load_target("jetson-nano").fp16_tflops, load_target("jetson-nano").memory_bandwidth_gbs) == (0.472, 25.6)


def test_gpu_figures_exclude_the_dlas() -> None:
    # a TensorRT engine runs on the GPU: the GPU's share of the module's INT8 is below the total
    for profile in list_targets():
        if profile.gpu_int8_tops_dense is not None:
            assert profile.dla_cores and profile.gpu_int8_tops_dense < profile.int8_tops_dense, profile.name


def test_alias_gives_the_canonical_profile() -> None:
    assert load_target("jetson-orin-nano") is load_target("jetson-orin-nano-8gb")
    assert "jetson-orin-nano" in load_target("jetson-orin-nano-8gb").aliases
    assert "jetson-orin-nano" not in target_names()  # listed once, under its canonical name


def test_default_precisions() -> None:
    assert load_target("jetson-nano").precision == "fp16"  # Maxwell: no INT8 tensor cores
    assert load_target("x86-cpu").precision == "fp32"
    assert load_target("x86-cpu").runtime == "onnxruntime"
    for name in ["jetson-orin-nano", "jetson-agx-xavier", "jetson-xavier-nx", "t4", "a100", "h100"]:
        assert load_target(name).precision == "int8"
        assert load_target(name).runtime == "tensorrt"


def test_jetson_stacks_match_references() -> None:
    nano = load_target("jetson-nano")
    assert (nano.compute_capability, nano.jetpack, nano.tensorrt) == ("5.3", ["4.6.1"], ["8.2.1"])
    assert load_target("jetson-xavier-nx").compute_capability == "7.2"
    orin = load_target("jetson-agx-orin-64gb")
    assert orin.compute_capability == "8.7"
    assert dict(zip(orin.jetpack, orin.tensorrt, strict=True))["6.2"] == "10.3"


def test_name_is_normalised() -> None:
    assert load_target(" Jetson_Orin_Nano ").name == "jetson-orin-nano-8gb"


def test_unknown_name_suggests_a_close_match() -> None:
    with pytest.raises(EdgekdError) as info:
        load_target("jetson-orin-nan")
    message = str(info.value)
    assert "\n" not in message
    assert "did you mean 'jetson-orin-nano'" in message  # aliases are suggested too
    assert "x86-cpu" in message  # lists the known names


def test_custom_profile_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "board.yaml"
    path.write_text(CUSTOM)
    profile = load_target(str(path))
    assert profile.name == "my-board"
    assert profile.display_name == "my-board"
    assert profile.compute_capability == "8.7"
    assert profile.jetpack == ["6.2"]
    assert load_target(path) == profile  # a Path works too


def test_profile_with_unknown_field_fails(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(CUSTOM + "memory_bandwith_gbs: 50\n")
    with pytest.raises(EdgekdError, match="memory_bandwith_gbs") as info:
        load_target(path)
    assert "\n" not in str(info.value)


def test_profile_with_mismatched_stacks_fails(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(CUSTOM.replace('cuda: ["12.6"]', 'cuda: ["11.4", "12.6"]'))
    with pytest.raises(EdgekdError, match="same length"):
        load_target(path)


def test_missing_profile_file_fails(tmp_path: Path) -> None:
    with pytest.raises(EdgekdError, match="does not exist"):
        load_target(str(tmp_path / "nope.yaml"))
