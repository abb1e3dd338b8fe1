"""TensorRT: the trtexec script picks the right flags per TensorRT version; the API build needs a GPU.

The script is run for real with a stand-in ``trtexec`` (a shell script that prints a version banner
and records its arguments), so these tests check the flags the script would pass on a device.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from edgekd.errors import EdgekdError
from edgekd.export.tensorrt import build_engine, build_engine_script, tensorrt_available
from edgekd.targets import load_target

FAKE_TRTEXEC = """#!/usr/bin/env bash
if [ "$1" = "--help" ]; then echo "&&&& RUNNING TensorRT.trtexec [TensorRT v{version}] # trtexec --help"; exit 0; fi
printf '%s\\n' "$@" > "$(dirname "$0")/args.txt"
"""


def _run_script(tmp_path: Path, text: str, version: str, env_extra: dict | None = None) -> list[str]:
    (tmp_path / "model_int8.onnx").write_bytes(b"onnx")
    script = tmp_path / "build_engine.sh"
    script.write_text(text)
    fake = tmp_path / "trtexec"
    fake.write_text(FAKE_TRTEXEC.format(version=version))
    for p in (script, fake):
        p.chmod(p.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "TRTEXEC": str(fake), **(env_extra or {})}
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return (tmp_path / "args.txt").read_text().split()


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
    ("version", "expected", "absent"),
    [
        ("8502", ["--int8", "--fp16", "--buildOnly"], ["--stronglyTyped", "--skipInference"]),
        ("8601", ["--int8", "--fp16", "--skipInference"], ["--stronglyTyped", "--buildOnly"]),
        ("100300", ["--int8", "--fp16", "--skipInference"], ["--stronglyTyped"]),
    ],
)
def test_script_flags_follow_detected_version(tmp_path, orin_script, version, expected, absent):
    args = _run_script(tmp_path, orin_script, version)
    for flag in expected:
        assert flag in args
    for flag in absent:
        assert flag not in args
    assert "--onnx=model_int8.onnx" in args and "--saveEngine=model.engine" in args
    assert "--timingCacheFile=model.timing.cache" in args


def test_fully_quantized_model_is_strongly_typed_on_trt10(tmp_path):
    text = build_engine_script(
        "model_int8.onnx",
        load_target("jetson-orin-nano-super"),
        input_name="input",
        input_shape=(1, 8, 8),
        max_batch=4,
        engine_name="m.engine",
        fp16_fallback=False,
    )
    args = _run_script(tmp_path, text, "100300")
    assert "--stronglyTyped" in args
    assert "--int8" not in args and "--fp16" not in args
    assert "--maxShapes=input:4x1x8x8" in args
    # TensorRT 8 has no strong typing: the same script falls back to --int8 --fp16 there
    args8 = _run_script(tmp_path, text, "8601")
    assert "--int8" in args8 and "--stronglyTyped" not in args8


def test_script_rejects_bad_shapes():
    with pytest.raises(EdgekdError, match="input_shape"):
        build_engine_script("m.onnx", load_target("t4"), input_name="x", input_shape=(3, 32))  # type: ignore[arg-type]


@pytest.mark.skipif(tensorrt_available()[0], reason="TensorRT and a GPU are present: the error path does not apply")
def test_build_engine_without_tensorrt_is_one_clear_error(tmp_path):
    with pytest.raises(EdgekdError, match="build_engine.sh") as err:
        build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", input_name="input", input_shape=(3, 32, 32))
    assert "\n" not in str(err.value)
