"""Shared fixtures: a real digits teacher trained once per session, and a CLI runner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

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


# ---- issue 6 (bench gates, packages): one finished digits run shared by tests/test_bench_*.py and
# tests/test_package*.py, with real INT8 ONNX files made by ONNX Runtime's static quantization
# (until the quantize stage's own exports are merged; those files have the same names and roles).
FAST_BENCH_OPTS = ("--set", "bench.runs=50", "--set", "bench.sessions=1", "--set", "bench.throughput_runs=3")


def _quantize_static(fp32: Path, out: Path, images, *, symmetric: bool) -> None:
    """A real INT8 QDQ model: uint8 activations (ORT CPU flavour) or symmetric int8 (TensorRT flavour)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": images[i : i + 32]} for i in range(0, len(images), 32)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(
        str(fp32),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True},
    )


@pytest.fixture(scope="session")
def int8_run(tmp_path_factory, cli, digits_teacher) -> Path:
    """A finished `compress` run on digits (jetson-orin-nano) whose export holds INT8 models too."""
    import numpy as np

    from edgekd.data import BatchIterator
    from edgekd.pipeline import RunDir
    from edgekd.stages.common import normalization_from_teacher_json

    out = tmp_path_factory.mktemp("int8run") / "run"
    args = ["compress", "--teacher", digits_teacher, "--target", "jetson-orin-nano", "--student", "cnn_small"]
    result = cli(*args, "--epochs", "8", "--out", out, "--quiet", *FAST_BENCH_OPTS)
    assert result.exit_code == 0, result.output
    from edgekd.data import load_data

    data = load_data("digits", val_fraction=0.2, seed=0, max_train_samples=None, image_size=None)
    norm = normalization_from_teacher_json(out / "teacher")
    calib = np.concatenate(
        [x.numpy() for x, _ in BatchIterator(data.train, 128, shuffle=False, seed=0, normalization=norm)]
    )[:256]
    _quantize_static(out / "export" / "model_fp32.onnx", out / "export" / "model_int8_cpu.onnx", calib, symmetric=False)
    _quantize_static(out / "export" / "model_fp32.onnx", out / "export" / "model_int8.onnx", calib, symmetric=True)
    run = RunDir(out)
    run.load_manifest()
    run.manifest["stages"]["export"]["outputs"] = run.hash_outputs("export")  # as if export had written them
    run.save_manifest()
    return out
