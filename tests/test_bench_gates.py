"""`edgekd bench` for CI on a real digits run: runtimes, INT8 rows, batches, gates, JUnit XML, plot."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cli_helpers import FAST_BENCH_OPTS
from junitparser import Failure, JUnitXml, Skipped

from edgekd.bench.gates import evaluate_gates
from edgekd.bench.junit import junit_xml
from edgekd.config import GateConfig

CHEAP = ("--runtime", "onnxruntime", "--batch", "1", *FAST_BENCH_OPTS)  # gate tests need one runtime only


def _cases(path: Path) -> dict[str, object]:
    xml = JUnitXml.fromfile(str(path))
    return {f"{case.classname}::{case.name}": case for suite in xml for case in suite}


@pytest.fixture(scope="module")
def benched(int8_run, cli):
    """bench with four runtimes (two of which cannot run here) and three batch sizes."""
    result = cli(
        "bench",
        int8_run,
        "--runtime",
        "onnxruntime,torch,torch-cuda,tensorrt",
        "--batch",
        "1,4,8",
        "--json",
        *FAST_BENCH_OPTS,
    )
    assert result.exit_code == 0, result.output
    return int8_run, json.loads((int8_run / "bench" / "results.json").read_text())


def test_rows_per_model_format_and_runtime(benched):
    _, results = benched
    rows = {(r["model"], r["format"], r["runtime"]): r for r in results["models"]}
    assert set(rows) == {
        ("teacher", "onnx-fp32", "onnxruntime"),
        ("student", "onnx-fp32", "onnxruntime"),
        ("student", "onnx-int8", "onnxruntime"),
        ("teacher", "pytorch-fp32", "torch"),
        ("student", "pytorch-fp32", "torch"),
    }
    int8 = rows[("student", "onnx-int8", "onnxruntime")]
    assert int8["file"] == "export/model_int8_cpu.onnx" and "CPU flavour" in int8["note"]  # jetson target: labelled
    fp32 = rows[("student", "onnx-fp32", "onnxruntime")]
    assert int8["bytes"] < 0.6 * fp32["bytes"]
    assert abs(int8["top1"] - fp32["top1"]) <= 0.03  # a real INT8 model of the same student
    # torch eager and ONNX Runtime compute the same model: same accuracy on the whole split
    assert rows[("student", "pytorch-fp32", "torch")]["top1"] == pytest.approx(fp32["top1"], abs=1 / 360 + 1e-9)
    for r in rows.values():
        assert set(r["latency"]) == {"1", "4", "8"} and r["latency_b1"]["batch_size"] == 1
        assert r["throughput"]["batch_size"] == 8 and r["val_samples"] == 360
        for rec in r["latency"].values():
            assert rec["source"] == "measured" and 0 < rec["p50_ms"] <= rec["p90_ms"] <= rec["p99_ms"]
        assert r["peak_host_mib"] > 50  # the process's peak RSS (torch alone is bigger than that)
    skipped = {s["runtime"]: s["reason"] for s in results["skipped"]}
    assert "no CUDA GPU" in skipped["torch-cuda"] and "tensorrt" in skipped["tensorrt"]


def test_markdown_report_and_plot(benched):
    run, results = benched
    md = (run / "bench" / "results.md").read_text()
    assert "| student | onnx-int8 | onnxruntime |" in md and "| teacher | pytorch-fp32 | torch |" in md
    assert "p50 ms (batch 4)" in md and "Skipped runtime torch-cuda" in md and "INT8 vs FP32 student" in md
    png = run / "bench" / "accuracy_latency.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and results["plot"] == "bench/accuracy_latency.png"
    assert "![accuracy vs latency](bench/accuracy_latency.png)" in (run / "report.md").read_text()


def test_target_estimates_carry_their_source(benched):
    """The run's target is a Jetson: each exported model also gets a modelled latency on it, labelled."""
    run, results = benched
    est = {(e["model"], e["format"]): e for e in results["target_estimates"]}
    assert set(est) == {("teacher", "onnx-fp32"), ("student", "onnx-fp32"), ("student", "onnx-int8")}
    assert est[("student", "onnx-int8")]["file"] == "model_int8.onnx"  # the TensorRT flavour for a Jetson
    for e in est.values():
        assert e["source"] in ("lut", "roofline", "lut+roofline") and e["ms"] > 0
        assert e["target"] == "jetson-orin-nano-8gb" and e["batch_size"] == 1
    # cnn_medium does more work than cnn_small (for a model this small, INT8 gains nothing on the model:
    # the per-kernel overheads dominate, so no order is asserted between the student's two precisions)
    assert est[("teacher", "onnx-fp32")]["ms"] > est[("student", "onnx-fp32")]["ms"]
    assert "Modelled latency on jetson-orin-nano-8gb" in (run / "bench" / "results.md").read_text()


def test_junit_has_a_case_per_model_runtime_and_skip(benched):
    run, results = benched
    cases = _cases(run / "bench" / "junit.xml")
    assert "edgekd.bench.onnxruntime::student onnx-int8" in cases
    assert len(cases) == len(results["models"]) + len(results["skipped"])
    skipped = cases["edgekd.bench.torch-cuda::all models"]
    assert any(isinstance(r, Skipped) for r in skipped.result)


def test_impossible_gate_turns_the_job_red(benched, cli):
    run, _ = benched
    result = cli(
        "bench",
        run,
        "--max-latency-ms",
        "0.000001",
        "--max-accuracy-drop",
        "100",
        "--min-accuracy",
        "99.99",
        "--quiet",
        *CHEAP,
    )
    assert result.exit_code == 1, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("edgekd: error:") and "gate(s) failed" in line and "max_latency_ms" in line
    assert "over by" in line
    results = json.loads((run / "bench" / "results.json").read_text())
    gates = {(g["gate"], g["subject"]): g for g in results["gates"]}
    assert gates[("max_latency_ms", "student onnx-fp32 onnxruntime")]["status"] == "failed"
    assert gates[("max_accuracy_drop", "student onnx-int8 onnxruntime")]["status"] == "passed"
    assert gates[("min_accuracy", "student onnx-fp32 onnxruntime")]["status"] == "failed"
    cases = _cases(run / "bench" / "junit.xml")
    failed = [k for k, c in cases.items() if any(isinstance(r, Failure) for r in c.result)]
    assert "edgekd.gates.max_latency_ms::student onnx-fp32 onnxruntime" in failed
    assert not any(k.startswith("edgekd.gates.max_accuracy_drop") for k in failed)
    assert results["gates_failed"] == len(failed)


def test_baseline_regression_gate(benched, cli, tmp_path):
    run, _ = benched
    fast = json.loads((run / "bench" / "results.json").read_text())
    for row in fast["models"]:  # a baseline 100x faster than today: every row regressed
        for rec in row["latency"].values():
            rec["p50_ms"] /= 100
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps(fast))
    result = cli("bench", run, "--baseline", baseline, "--max-regression", "10%", "--quiet", *CHEAP)
    assert result.exit_code == 1 and "max_regression" in result.stderr
    assert re.search(r"\+\d+(\.\d+)?% > \+10%", result.stderr), result.stderr  # by how much, against the limit
    result = cli("bench", run, "--max-regression", "10%", "--quiet")  # gate options replace the saved ones
    assert result.exit_code == 2 and "needs --baseline" in result.stderr
    result = cli("bench", run, "--baseline", tmp_path / "missing.json", "--max-regression", "10", "--quiet")
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_unknown_runtime_and_bad_batch_are_user_errors(int8_run, cli):
    result = cli("bench", int8_run, "--runtime", "onnxruntime,tflite", "--quiet")
    assert result.exit_code == 2 and "unknown runtime 'tflite'" in result.stderr
    result = cli("bench", int8_run, "--batch", "1,x", "--quiet")
    assert result.exit_code == 2 and "--batch" in result.stderr


# ---- gates and JUnit on hand-made results (no run needed) ---------------------------------------
def _row(model, fmt, top1, p50, runtime="onnxruntime"):
    rec = {"batch_size": 1, "p50_ms": p50, "p90_ms": p50, "p99_ms": p50, "source": "measured"}
    return {
        "model": model,
        "format": fmt,
        "runtime": runtime,
        "top1": top1,
        "latency_b1": rec,
        "latency": {"1": rec},
    }


RESULTS = {
    "host": {"cpu": "x"},
    "models": [_row("teacher", "onnx-fp32", 0.98, 1.0), _row("student", "onnx-int8", 0.95, 0.5)],
    "teacher_pytorch_top1": 0.98,
}


@pytest.mark.parametrize(
    ("gates", "status", "needle"),
    [
        (GateConfig(max_latency_ms=0.25), "failed", "over by 0.250 ms, +100%"),
        (GateConfig(max_latency_ms=0.6), "passed", "<= 0.6 ms"),
        (GateConfig(max_latency_ms=0.3, latency_percentile="p99"), "failed", "p99 latency"),
        (GateConfig(min_accuracy_pct=96), "failed", "short by 1.00 points"),
        (GateConfig(max_accuracy_drop_points=2), "failed", "drop 3.00 points > 2 (over by 1.00 points)"),
        (GateConfig(max_accuracy_drop_points=3.5), "passed", "teacher 98.00%"),
        (GateConfig(max_regression_pct=10), "skipped", "no --baseline"),
    ],
)
def test_gate_outcomes(gates, status, needle):
    (result,) = evaluate_gates(RESULTS, gates, None)
    assert result.status == status and needle in result.message, result.message


def test_regression_against_a_baseline_row_by_row():
    baseline = {"host": {"cpu": "y"}, "models": [_row("student", "onnx-int8", 0.95, 0.4)]}
    out = evaluate_gates(RESULTS, GateConfig(max_regression_pct=10), baseline)
    by = {r.subject: r for r in out}
    assert by["student onnx-int8 onnxruntime batch 1"].status == "failed"
    assert "+25.0%" in by["student onnx-int8 onnxruntime batch 1"].message
    assert "another machine" in by["student onnx-int8 onnxruntime batch 1"].message
    assert by["teacher onnx-fp32 onnxruntime batch 1"].status == "skipped"


def test_junit_counts_and_escaping(tmp_path):
    results = {
        **RESULTS,
        "skipped": [{"runtime": "tensorrt", "reason": "no <GPU> & no tensorrt"}],
        "gates": [
            g.as_dict() for g in evaluate_gates(RESULTS, GateConfig(max_latency_ms=0.25, min_accuracy_pct=90), None)
        ],
    }
    path = tmp_path / "junit.xml"
    path.write_text(junit_xml(results, timestamp="2026-01-01T00:00:00+00:00", seconds=1.5))
    xml = JUnitXml.fromfile(str(path))
    suite = next(iter(xml))
    assert (suite.tests, suite.failures, suite.skipped) == (5, 1, 1)
    cases = _cases(path)
    assert cases["edgekd.bench.tensorrt::all models"].result[0].message == "no <GPU> & no tensorrt"


def test_plot_draws_the_search_front_from_the_journal(tmp_path):
    from edgekd.bench.plots import accuracy_latency_plot, search_front

    (tmp_path / "search").mkdir()
    trials = [
        {"kind": "nas", "latency_ms": 1.0, "proxy_top1": 0.90, "latency_source": "roofline"},
        {"kind": "nas", "latency_ms": 2.0, "proxy_top1": 0.85, "latency_source": "roofline"},  # dominated
        {"kind": "nas", "latency_ms": 3.0, "proxy_top1": 0.95, "latency_source": "roofline"},
        {"kind": "nas", "latency_ms": 0.5, "status": "rejected"},
    ]
    (tmp_path / "search" / "trials.jsonl").write_text("\n".join(map(json.dumps, trials)) + "\n")
    front, source = search_front(tmp_path)
    assert front == [(1.0, 90.0), (3.0, 95.0)] and source == "roofline"
    out = accuracy_latency_plot(RESULTS, tmp_path / "plot.png", front=front, front_source=source)
    assert out is not None and out.read_bytes()[:4] == b"\x89PNG"
