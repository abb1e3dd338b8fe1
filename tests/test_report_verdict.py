"""Issue 20, defect 5: report.md always ends with a plain verdict and the thresholds that produced it."""

from __future__ import annotations

from edgekd.bench.verdict import DEFAULT_MAX_DROP_POINTS, verdict
from edgekd.config import build_config
from edgekd.io import atomic_write_json
from edgekd.report import build_report
from edgekd.rundir import RunDir


def _row(model, fmt, top1, pytorch_top1=None):
    return {"model": model, "format": fmt, "runtime": "onnxruntime", "top1": top1, "pytorch_top1": pytorch_top1}


def _results(student_top1=0.97, int8_ort=0.965, int8_pt=0.965, gates=None, failed_gates=()):
    return {
        "models": [
            _row("teacher", "onnx-fp32", 0.99, 0.99),
            _row("student", "onnx-fp32", student_top1, student_top1),
            _row("student", "onnx-int8", int8_ort, int8_pt),
        ],
        "teacher_pytorch_top1": 0.99,
        "comparison": {"runtime": "onnxruntime", "speedup_b1": 2.5},
        "latency_source": "measured on this host",
        "gate_settings": gates or {"max_accuracy_drop_points": None},
        "gates": [{"status": "failed", "message": m} for m in failed_gates],
    }


QUANTIZE = {"quantize": {"status": "done", "metrics": {"mode": "qat", "drop_points": 0.5, "max_drop_points": 1.0}}}


def _text(v) -> str:
    return "\n".join(v.lines())


def test_a_student_62_points_below_its_teacher_is_not_ready():
    v = verdict(_results(student_top1=0.37, int8_ort=0.37, int8_pt=0.37), QUANTIZE)
    assert v.status == "not ready"
    assert "**Verdict: not ready.** Student onnx-fp32 (onnxruntime) is 62.00 points below the teacher (limit 3)" in (
        _text(v)
    )
    assert f"student within {DEFAULT_MAX_DROP_POINTS:g} points of the teacher's top-1 (edgekd default)" in _text(v)


def test_int8_that_scores_8_points_apart_in_pytorch_and_onnx_runtime_is_not_ready():
    v = verdict(_results(int8_ort=0.88, int8_pt=0.96), QUANTIZE)
    assert v.status == "not ready"
    text = _text(v)
    assert "student onnx-int8 scores 88.00% in onnxruntime but 96.00% in PyTorch, 8.00 points apart (limit 1)" in text
    assert "within 1 point of the same model in PyTorch (edgekd default)" in text


def test_a_good_student_is_ready_and_says_by_which_thresholds():
    v = verdict(_results(), QUANTIZE)
    text = _text(v)
    assert v.status == "ready" and text.startswith(
        "## Verdict\n\n**Verdict: ready.** The student is within 2.50 points"
    )
    assert "every runtime agrees with PyTorch within 0.00 points" in text and "2.50x faster" in text
    assert "INT8 within 1 point of the FP32 student in PyTorch (quantize.max_drop)" in text


def test_gates_set_by_the_user_are_the_thresholds():
    v = verdict(_results(gates={"max_accuracy_drop_points": 1.5}, failed_gates=["student p50 3.1 ms > 2 ms"]), {})
    text = _text(v)
    assert v.status == "not ready" and "limit 1.5" in text and "1 CI gate(s) failed: student p50 3.1 ms > 2 ms" in text
    assert "(bench.gates.max_accuracy_drop_points)" in text


def test_no_bench_or_a_failed_stage_still_gets_a_verdict():
    assert verdict(None, {}).status == "none yet"
    stopped = verdict(None, {"distill": {"status": "failed", "error": "training diverged"}}, "runs/x")
    assert stopped.status == "no result"
    assert "the run stopped at stage distill (training diverged)" in _text(stopped).lower()
    assert "edgekd compress --out runs/x --resume" in _text(stopped)


def test_report_md_ends_with_the_verdict(tmp_path):
    run = RunDir(tmp_path / "run")
    run.init_manifest(build_config(None, {}))
    run.manifest["stages"] = {"bench": {"status": "done", "outputs": {}}}
    atomic_write_json(run.path / "bench" / "results.json", _results(student_top1=0.37, int8_ort=0.37, int8_pt=0.37))
    text = build_report(run).rstrip()
    tail = text.split("## Verdict", 1)[1]
    assert "**Verdict: not ready.**" in tail and tail.rstrip().splitlines()[-1].startswith("Thresholds: ")
