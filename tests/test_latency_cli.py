"""`edgekd latency` and `edgekd profile`: estimates with their source, calibration tables, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekd.export.onnx_export import export_onnx
from edgekd.models import create_model
from edgekd.targets.calibrate import build_point, chainable, default_grid, quick_grid, tensorrt_available
from edgekd.targets.graph_cost import layers_from_onnx
from edgekd.targets.latency import estimate_latency
from edgekd.targets.lut import default_table_path, load_table


@pytest.fixture(autouse=True)
def lut_dir(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own empty table folder (never the user's ~/.cache)."""
    folder = tmp_path_factory.mktemp("lut")
    monkeypatch.setenv("EDGEKD_LUT_DIR", str(folder))
    return folder


@pytest.fixture(scope="module")
def resnet8_onnx(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "resnet8.onnx"
    export_onnx(create_model("resnet8"), path, input_shape=(3, 32, 32))
    return path


def _one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgekd: error:"), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_latency_of_an_onnx_file(cli, resnet8_onnx: Path) -> None:
    result = cli("latency", resnet8_onnx, "--target", "jetson-orin-nano", "--precision", "int8", "--json")
    assert result.exit_code == 0, result.output
    est = json.loads(result.stdout)
    assert est["source"] == "roofline" and est["target"] == "jetson-orin-nano-8gb" and est["precision"] == "int8"
    assert est["ms"] > 0 and est["per_layer"] and all(r["source"] == "roofline" for r in est["per_layer"])
    batch4 = json.loads(cli("latency", resnet8_onnx, "--target", "jetson-orin-nano", "--batch", "4", "--json").stdout)
    assert batch4["batch"] == 4 and batch4["precision"] == "int8"  # default: the target's precision


def test_latency_of_a_zoo_model_verbose(cli) -> None:
    result = cli("latency", "resnet8", "--target", "t4", "--input-shape", "3,32,32", "--verbose", "--lut", "none")
    assert result.exit_code == 0, result.output
    assert "source: roofline" in result.stdout and "modelled" in result.stdout
    assert "Conv" in result.stdout  # the per-layer table


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--target", "jetson-orin-nanoo"], "unknown target"),
        (["--target", "t4", "--precision", "bf16"], "precision"),
        (["--target", "jetson-nano", "--precision", "int8"], "no int8 throughput"),
        (["--target", "t4", "--batch", "0"], "batch"),
        (["--target", "t4", "--lut", "missing.json"], "does not exist"),
    ],
)
def test_latency_errors_are_one_line(cli, resnet8_onnx: Path, args: list[str], needle: str) -> None:
    _one_line_error(cli("latency", resnet8_onnx, *args), needle)


def test_latency_of_a_missing_file(cli, tmp_path: Path) -> None:
    _one_line_error(cli("latency", tmp_path / "nope.onnx", "--target", "t4"), "does not exist")
    _one_line_error(cli("latency", "resnet8", "--target", "t4", "--input-shape", "3,32"), "C,H,W")


def test_profile_needs_the_device(cli, tmp_path: Path) -> None:
    ok, why = tensorrt_available()
    if ok:
        pytest.skip("TensorRT and a GPU are present: profiling a Jetson target here would really run")
    _one_line_error(cli("profile", "--target", "jetson-orin-nano", "--out", tmp_path / "t.json"), "TensorRT", why)
    _one_line_error(cli("profile", "--target", "x86-cpu", "--precision", "int8", "--quick"), "fp32")
    _one_line_error(cli("profile", "--target", "x86-cpu", "--quick", "--clock", "sundial"), "clock")


def test_profile_quick_writes_the_table_estimates_then_use(cli, lut_dir: Path, resnet8_onnx: Path) -> None:
    result = cli("profile", "--target", "x86-cpu", "--quick", "--threads", "1", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    path = default_table_path("x86-cpu")
    assert Path(summary["table"]) == path and path.parent == lut_dir and path.is_file()
    table = load_table(path)
    assert table.runtime == "onnxruntime" and table.grid == "quick"
    fp32 = table.precisions["fp32"]
    assert len(fp32.entries) == len(quick_grid()) and all(ms > 0 for ms in fp32.entries.values())
    assert {"conv", "conv1x1", "dwconv", "gemm", "pool", "eltwise", "data", "nms", "eltwise:SiLU"} <= set(fp32.fits)
    # from the chained points that take at least 10 us (on a fast machine the quick grid may have none)
    assert set(fp32.graph_factors) <= {"conv", "conv1x1", "dwconv"}
    assert all(0.3 <= f <= 1.2 for f in fp32.graph_factors.values())
    # found automatically by target name, and every layer priced from it
    est = estimate_latency(resnet8_onnx, "x86-cpu")
    assert est.source == "lut" and est.table
    assert {r["source"] for r in est.per_layer} <= {"lut", "lut-fit"}
    # the CLI reports it
    shown = json.loads(cli("latency", resnet8_onnx, "--target", "x86-cpu", "--json").stdout)
    assert shown["source"] == "lut" and shown["ms"] == pytest.approx(est.ms)
    # an explicit table path works too, and 'none' gives the roofline
    assert estimate_latency(resnet8_onnx, "x86-cpu", lut=path).source == "lut"
    assert json.loads(cli("latency", resnet8_onnx, "--target", "x86-cpu", "--lut", "none", "--json").stdout)[
        "source"
    ] == ("roofline")


def test_grid_points_are_single_layers_with_stable_keys() -> None:
    # each grid model prices as exactly one layer, and the key is the one a network layer of the same
    # shape gets (so the table's entries are found)
    for point in quick_grid() + default_grid()[::15]:
        layers = layers_from_onnx(build_point(point))
        assert len(layers) == 1, point
        if chainable(point):  # a chain of copies prices as that many identical layers
            chain = layers_from_onnx(build_point(point, repeat=3))
            assert [x.key for x in chain] == [layers[0].key] * 3
    conv = layers_from_onnx(build_point(quick_grid()[0]))[0]
    assert conv.key == "conv:n1:c16:hw16x16:o16:k3x3:s1x1:g1" and conv.fused == ["Relu"]
    point = next(p for p in default_grid() if (p.kind, p.c_in, p.hw, p.c_out, p.stride) == ("conv", 16, 32, 16, 1))
    key = layers_from_onnx(build_point(point))[0].key
    assert any(layer.key == key for layer in layers_from_onnx(_resnet8_proto()))  # resnet8's first stage


def _resnet8_proto():
    from edgekd.targets.graph_cost import torch_to_onnx

    return torch_to_onnx(create_model("resnet8"), (3, 32, 32))


@pytest.mark.skipif(not tensorrt_available()[0], reason="TensorRT with a CUDA GPU is not available on this machine")
def test_tensorrt_profile_quick(tmp_path: Path) -> None:  # pragma: no cover - runs on a GPU machine only
    from edgekd.targets.calibrate import run_profile

    table = run_profile("t4", grid="quick", precisions=("fp16",), sessions=1, min_runs=10)
    assert table.runtime == "tensorrt" and table.precisions["fp16"].entries


def test_profile_by_cpu_clock(tmp_path: Path) -> None:
    from edgekd.targets.calibrate import run_profile

    table = run_profile("x86-cpu", grid="quick", threads=1, sessions=1, min_runs=5, budget_s=0.01, clock="cpu")
    table.save(tmp_path / "t.json")
    again = load_table(tmp_path / "t.json")
    assert again.clock == "cpu" and all(ms > 0 for ms in again.precisions["fp32"].entries.values())
