"""Shared fixtures: a real digits teacher trained once per session, and a CLI runner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from cli_helpers import FAST_BENCH_OPTS
from typer.testing import CliRunner

# `make test` runs two pytest-xdist workers on the 2-core machines: one torch thread each, since
# oversubscribed threads slow small CPU models down many times over.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1)))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EDGEKD_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def cli():
    from edgekd.cli import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return invoke


@pytest.fixture(scope="session")
def digits_teacher(tmp_path_factory, cli) -> Path:
    """A cnn_medium trained on digits for 15 epochs (about 5 s): a real teacher."""
    out = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    result = cli("train-teacher", "--arch", "cnn_medium", "--data", "digits", "--epochs", "15", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    return out


# One finished digits run (with its INT8 exports) shared by tests/test_bench_*.py and tests/test_package*.py.


@pytest.fixture(scope="session")
def int8_run(tmp_path_factory, cli, digits_teacher) -> Path:
    """A finished `compress` run on digits (--target jetson: jetson-orin-nano-8gb): distill -> quantize (QAT) -> export
    (FP32 + both INT8 flavours) -> bench -> package."""
    out = tmp_path_factory.mktemp("int8run") / "run"
    # the product's own line: `--target jetson` is, off a Jetson, the stated default jetson-orin-nano-8gb
    # (issue 20, defect 0); the probe is switched off so that a Jetson test machine gets the same run
    args = ["compress", "--teacher", digits_teacher, "--target", "jetson", "--student", "cnn_small"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("edgekd.targets.families.detect_jetson", lambda root=None: None)
        result = cli(*args, "--epochs", "8", "--out", out, "--quiet", *FAST_BENCH_OPTS)
    assert result.exit_code == 0, result.output
    for name in ("model_fp32.onnx", "model_int8.onnx", "model_int8_cpu.onnx"):
        assert (out / "export" / name).is_file(), name
    return out
