"""The quantize stage end to end on digits: compress runs distill -> quantize -> export -> bench, and
the INT8 artifacts, metrics, parity, TensorRT rules, bench rows and report are all there."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_helpers import FAST_BENCH_OPTS, sets

from edgekd.export.trt_rules import check_trt_rules

FAST = [
    *FAST_BENCH_OPTS,
    *sets("bench.warmup=1", "export.export_teacher=false", "quantize.sensitivity_samples=100"),
]


@pytest.fixture(scope="module")
def int8_run(tmp_path_factory, cli, digits_teacher):
    out = tmp_path_factory.mktemp("q") / "run"
    result = cli(
        "compress", "--teacher", digits_teacher, "--target", "jetson-orin-nano", "--student", "cnn_small",
        "--epochs", "3", "--out", out,
        "--quiet", *FAST,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def fp32_only_run(tmp_path_factory, cli, digits_teacher):
    """A finished digits run made with --no-quantize (FP32 exports only)."""
    out = tmp_path_factory.mktemp("fp32") / "run"
    result = cli(
        "compress", "--teacher", digits_teacher, "--student", "cnn_small", "--epochs", "2", "--out", out,
        "--no-quantize", "--quiet", *FAST,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def fp32_run(fp32_only_run, tmp_path):
    """A copy of ``fp32_only_run`` of the test's own, to rerun stages in."""
    return Path(shutil.copytree(fp32_only_run, tmp_path / "run"))


def test_quantize_stage_outputs_and_metrics(int8_run):
    manifest = json.loads((int8_run / "manifest.json").read_text())
    assert list(manifest["stages"]) == ["teacher", "distill", "quantize", "export", "bench", "package"]
    m = manifest["stages"]["quantize"]["metrics"]
    assert m["mode"] == "qat" and m["qat_epochs"] == 1  # 10% of 3 distill epochs, at least 1
    assert 0.8 < m["val_top1"] <= 1 and 0.8 < m["fp32_val_top1"] <= 1
    assert m["drop_points"] <= 1.0 + 1e-9  # within the default --max-drop
    for name in ("student_int8.pt", "calibration.json", "metrics.json"):
        assert (int8_run / "quantize" / name).is_file()
    calib = json.loads((int8_run / "quantize" / "calibration.json").read_text())
    assert all(p["amax"] > 0 for p in calib["points"].values())
    # calibrator auto: all four scored on the validation images, the best kept
    scores = calib["auto_scores"]
    assert set(scores) == {"max", "percentile", "entropy", "mse"} and calib["method"] == m["calibrator"]
    assert scores[m["calibrator"]] == max(scores.values()) and m["calibrator_setting"] == "auto"
    full = json.loads((int8_run / "quantize" / "metrics.json").read_text())
    assert set(full["sensitivity"]["layers"]) == set(calib["layers"])


def test_export_writes_both_flavours_with_parity(int8_run):
    export = int8_run / "export"
    rules = check_trt_rules(export / "model_int8.onnx")
    assert rules["passed"], rules["violations"]
    assert not check_trt_rules(export / "model_int8_cpu.onnx")["passed"]  # uint8: not for TensorRT
    parity = json.loads((export / "parity.json").read_text())
    assert parity["student_int8_cpu"]["top1_agreement"] >= 0.99
    assert parity["student_int8_trt"]["top1_agreement"] >= 0.99
    assert parity["int8_flavours"]["top1_agreement"] >= 0.995
    script = (export / "build_engine.sh").read_text()
    assert "model_int8.onnx" in script and "--maxShapes=input:8x1x8x8" in script  # jetson-orin-nano: batch 8


def test_bench_and_report_show_int8_beside_fp32(int8_run):
    results = json.loads((int8_run / "bench" / "results.json").read_text())
    rows = {(r["model"], r["format"]): r for r in results["models"] if r["runtime"] == "onnxruntime"}
    fp32, int8 = rows[("student", "onnx-fp32")], rows[("student", "onnx-int8")]
    assert int8["file"] == "export/model_int8_cpu.onnx"  # ONNX Runtime on this CPU runs the cpu flavour
    assert int8["bytes"] < 0.5 * fp32["bytes"]
    assert int8["top1"] > 0.8 and abs(int8["top1"] - fp32["top1"]) <= 0.03
    report = (int8_run / "report.md").read_text()
    assert "## INT8" in report and "model_int8_cpu.onnx" in report and "onnx-int8" in report


def test_no_quantize_keeps_fp32(fp32_run, cli):
    out = fp32_run
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["quantize"]["metrics"]["mode"] == "off"
    assert not (out / "export" / "model_int8.onnx").exists()
    assert "--fp16" in (out / "export" / "build_engine.sh").read_text()
    assert "skipped (--no-quantize)" in (out / "report.md").read_text()
    # the quantize command turns INT8 on for this run (PTQ here: calibration only)
    result = cli("quantize", out, "--mode", "ptq", "--calibrator", "percentile", "--quiet")
    assert result.exit_code == 0, result.output
    m = json.loads((out / "manifest.json").read_text())["stages"]["quantize"]["metrics"]
    assert m["mode"] == "ptq" and m["calibrator"] == "percentile" and "qat_epochs" not in m


def test_qat_that_ends_below_calibration_keeps_the_calibrated_weights(fp32_run, cli):
    out = fp32_run
    # a learning rate of 50 wrecks the fake-quant weights in one epoch: QAT must lose to calibration
    result = cli(
        "quantize", out, "--mode", "qat", "--epochs", "1", "--max-drop", "100", "--set", "quantize.lr=50", "--quiet"
    )
    assert result.exit_code == 0, result.output
    m = json.loads((out / "quantize" / "metrics.json").read_text())
    assert m["qat_val_top1"] < m["ptq_val_top1"]
    assert m["selected"] == "ptq" and m["val_top1"] == m["ptq_val_top1"]
    assert "keeping the calibrated (PTQ) weights" in result.output


def test_qat_with_feature_kd(fp32_run, cli):
    """quantize.feature_method adds a feature term to QAT-KD, read at the quantized model's stages."""
    out = fp32_run
    result = cli("quantize", out, "--set", "quantize.feature_method=kd", "--quiet")
    assert result.exit_code == 2
    assert "'kd' is not a feature distillation method; choose one of at," in result.output
    result = cli("quantize", out, "--mode", "qat", "--epochs", "1", "--set", "quantize.feature_method=at", "--quiet")
    assert result.exit_code == 0, result.output
    # --quiet prints no table; the export made before this quantize is now out of date, and it says so
    assert "| model |" not in result.output and "report:" not in result.output
    assert "out of date: export ran on earlier inputs" in " ".join(result.output.split())
    m = json.loads((out / "quantize" / "metrics.json").read_text())
    assert [(x["name"], x["weight"]) for x in m["qat_methods"]] == [("kd", 0.9), ("at", 1000.0)]
    terms = m["qat_history"][0]["train_loss"]
    assert {"ce", "kd", "at"} <= set(terms) and terms["at"] > 0
