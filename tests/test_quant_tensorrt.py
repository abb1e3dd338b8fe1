"""TensorRT: build_engine.sh passes only the flags each TensorRT version's trtexec accepts.

The script is run for real with a stand-in ``trtexec``: a shell script that prints the version banner,
rejects every option the real trtexec of that version does not parse ("Unknown option", exit 1;
the per-version lists in tests/data/trtexec_flags.json are read from NVIDIA's trtexec sources), records
its arguments, and writes the layer information and profile files it is asked for (real trtexec
output, trimmed: tests/data/trt_*_sample.json). So these tests check the flags the script would pass
on a device, and the layer report it leaves next to the engine.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from edgekd.errors import EdgekdError
from edgekd.runtimes.tensorrt.build import build_engine, build_engine_script, tensorrt_available
from edgekd.targets import load_target

DATA = Path(__file__).parent / "data"
TEMPLATES = Path(__file__).resolve().parents[1] / "edgekd" / "package" / "templates"
FLAGS = json.loads((DATA / "trtexec_flags.json").read_text())["versions"]
# banner number -> the flag list of that trtexec (11.4 parses as the newest open-source trtexec, 11.1)
BANNERS = {"8201": "8.2", "8502": "8.5", "8601": "8.6", "100300": "10.3", "110100": "11.1", "110400": "11.1"}

FAKE_TRTEXEC = """#!/usr/bin/env bash
if [ "$1" = "--help" ]; then echo "&&&& RUNNING TensorRT.trtexec [TensorRT v{banner}] # trtexec --help"; exit 0; fi
here="$(dirname "$0")"
for a in "$@"; do
  name="${{a%%=*}}"
  if ! grep -qx -- "$name" "$here/accepted.txt"; then echo "[E] Unknown option: $name" >&2; exit 1; fi
  case "$a" in
    --exportLayerInfo=*) cp "$here/layers_sample.json" "${{a#*=}}" ;;
    --exportProfile=*) cp "$here/profile_sample.json" "${{a#*=}}" ;;
    --saveEngine=*) echo plan > "${{a#*=}}" ;;
  esac
done
printf '%s\\n' "$@" > "$here/args$(ls "$here" | grep -c '^args').txt"
"""


def _run_script(tmp_path: Path, text: str, banner: str, env_extra: dict | None = None) -> list[list[str]]:
    """Run ``text`` as build_engine.sh in ``tmp_path`` with the stand-in trtexec of ``banner``; returns
    the arguments of each trtexec call (the build, then the profiling run)."""
    for old in tmp_path.glob("args*.txt"):
        old.unlink()
    (tmp_path / "model_int8.onnx").write_bytes(b"onnx")
    (tmp_path / "model_fp32.onnx").write_bytes(b"onnx")
    (tmp_path / "accepted.txt").write_text("\n".join(FLAGS[BANNERS[banner]]) + "\n")
    shutil.copy(DATA / "trt_layers_sample.json", tmp_path / "layers_sample.json")
    shutil.copy(DATA / "trt_profile_sample.json", tmp_path / "profile_sample.json")
    if (TEMPLATES / "layer_report.py").is_file():
        shutil.copy(TEMPLATES / "layer_report.py", tmp_path / "layer_report.py")
    script = tmp_path / "build_engine.sh"
    script.write_text(text)
    fake = tmp_path / "trtexec"
    fake.write_text(FAKE_TRTEXEC.format(banner=banner))
    for p in (script, fake):
        p.chmod(p.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "TRTEXEC": str(fake), **(env_extra or {})}
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    calls = sorted(tmp_path.glob("args*.txt"))
    return [p.read_text().split() for p in calls]


@pytest.fixture
def orin_script() -> str:
    return build_engine_script(
        "model_int8.onnx", load_target("jetson-orin-nano"), input_name="input", input_shape=(3, 32, 32)
    )


def test_script_is_valid_bash_with_profile_batch_range(orin_script):
    subprocess.run(["bash", "-n"], input=orin_script, text=True, check=True)
    assert "--maxShapes=input:8x3x32x32" in orin_script  # jetson-orin-nano max_batch is 8
    assert "--minShapes=input:1x3x32x32" in orin_script
    assert "JetPack 6.2 / TensorRT 10.3" in orin_script


@pytest.mark.parametrize(
    ("banner", "expected", "absent"),
    [
        ("8201", ["--int8", "--fp16", "--buildOnly"], ["--stronglyTyped", "--skipInference"]),
        ("8502", ["--int8", "--fp16", "--buildOnly"], ["--stronglyTyped", "--skipInference"]),
        ("8601", ["--int8", "--fp16", "--skipInference"], ["--stronglyTyped", "--buildOnly"]),
        ("100300", ["--stronglyTyped", "--skipInference"], ["--int8", "--fp16", "--best"]),
        ("110100", ["--skipInference"], ["--int8", "--fp16", "--best", "--stronglyTyped"]),
        ("110400", ["--skipInference"], ["--int8", "--fp16", "--best", "--stronglyTyped"]),
    ],
)
def test_int8_script_flags_follow_detected_version(tmp_path, orin_script, banner, expected, absent):
    build, profile = _run_script(tmp_path, orin_script, banner)  # the stand-in rejects unknown options
    for flag in expected:
        assert flag in build
    for flag in absent:
        assert flag not in build
    assert "--onnx=model_int8.onnx" in build and "--saveEngine=model.engine" in build
    assert "--timingCacheFile=model.timing.cache" in build
    assert "--profilingVerbosity=detailed" in build and "--exportLayerInfo=model.layers.json" in build
    assert "--loadEngine=model.engine" in profile and "--exportProfile=model.profile.json" in profile
    assert "--dumpProfile" in profile and "--shapes=input:1x3x32x32" in profile


@pytest.mark.parametrize("banner", ["8201", "100300", "110400"])
def test_fp32_model_script_never_passes_int8(tmp_path, banner):
    text = build_engine_script(
        "model_fp32.onnx", load_target("t4"), input_name="input", input_shape=(3, 32, 32), int8=False
    )
    build, _ = _run_script(tmp_path, text, banner)
    assert "--int8" not in build and "--onnx=model_fp32.onnx" in build
    # FP16 through the builder flag where trtexec still has it (8.x, 10.x); 11.x: no precision flag
    assert ("--fp16" in build) == (banner != "110400")


def test_script_writes_the_layer_report(tmp_path, orin_script):
    _run_script(tmp_path, orin_script, "100300")
    report = json.loads((tmp_path / "model.layer_report.json").read_text())
    assert set(report["by_precision"]) == {"INT8", "FP16", "FP32"} and report["timed"]
    assert report["by_precision"]["INT8"]["layers"] == 2
    md = (tmp_path / "model.layer_report.md").read_text()
    assert "| INT8 | 2 |" in md and "Sum of layer times" in md


def test_profile_run_can_be_skipped_and_its_failure_keeps_the_engine(tmp_path, orin_script):
    runs = _run_script(tmp_path, orin_script, "110400", {"PROFILE": "0"})
    assert len(runs) == 1 and (tmp_path / "model.engine").is_file()
    report = json.loads((tmp_path / "model.layer_report.json").read_text())
    assert not report["timed"] and report["by_precision"]["INT8"]["layers"] == 2  # precisions from the build


def test_trt_major_override(tmp_path, orin_script):
    (build, _) = _run_script(tmp_path, orin_script, "100300", {"TRT_MAJOR": "11"})
    assert "--stronglyTyped" not in build


def test_build_plan_rules():
    from edgekd.runtimes.tensorrt.build import build_plan

    assert build_plan(11, int8=True, fp16=True).trtexec_flags == ()
    assert build_plan(11, int8=False, fp16=True).strongly_typed
    assert build_plan(10, int8=True, fp16=True).trtexec_flags == ("--stronglyTyped",)
    assert build_plan(10, int8=False, fp16=True).builder_flags == ("FP16",)
    assert build_plan(10, int8=False, fp16=False).strongly_typed
    assert build_plan(8, int8=True, fp16=True).builder_flags == ("INT8", "FP16")
    for major in (8, 10, 11):
        for int8 in (True, False):
            flags = set(build_plan(major, int8=int8, fp16=True).trtexec_flags)
            version = {8: "8.2", 10: "10.3", 11: "11.1"}[major]
            assert flags <= set(FLAGS[version]), (major, flags)


def test_script_rejects_bad_shapes():
    with pytest.raises(EdgekdError, match="input_shape"):
        build_engine_script("m.onnx", load_target("t4"), input_name="x", input_shape=(3, 32))  # type: ignore[arg-type]


@pytest.mark.skipif(tensorrt_available()[0], reason="TensorRT and a GPU are present: the error path does not apply")
def test_build_engine_without_tensorrt_is_one_clear_error(tmp_path):
    with pytest.raises(EdgekdError, match="build_engine.sh") as err:
        build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", input_name="input", input_shape=(3, 32, 32))
    assert "\n" not in str(err.value)
