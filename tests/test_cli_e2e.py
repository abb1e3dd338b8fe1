"""End to end through the CLI on digits: real training, real ONNX Runtime, real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_helpers import sets

from edgekd.io import sha256_file
from edgekd.models.checkpoint import load_model_file

FAST_BENCH = sets("bench.runs=50", "bench.sessions=2", "bench.throughput_runs=3", "bench.warmup=2")


@pytest.fixture(scope="module")
def compressed(tmp_path_factory, cli, digits_teacher):
    out = tmp_path_factory.mktemp("e2e") / "run"
    result = cli(
        "compress",
        "--teacher",
        digits_teacher,
        "--target",
        "jetson-orin-nano",
        "--data",
        "digits",
        "--student",
        "cnn_small",
        "--epochs",
        "12",
        "--baseline",
        "--out",
        out,
        "--json",
        *FAST_BENCH,
    )
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def test_manifest_records_every_stage(compressed):
    out, summary = compressed
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest["stages"]) == ["teacher", "distill", "quantize", "export", "bench", "package"]
    assert manifest["target"] == "jetson-orin-nano" and manifest["versions"]["onnxruntime"]
    assert manifest["target_profile"]["runtime"] == "tensorrt" and manifest["target_profile"]["precision"] == "int8"
    for rec in manifest["stages"].values():
        assert rec["status"] == "done" and len(rec["fingerprint"]) == 64 and rec["seconds"] >= 0
        for rel, meta in rec["outputs"].items():
            assert sha256_file(out / rel) == meta["sha256"], rel
    outputs = {Path(p).name for rec in manifest["stages"].values() for p in rec["outputs"]}
    assert {
        "teacher.json",
        "student.pt",
        "last.ckpt",
        "metrics.json",
        "baseline.pt",
        "model_fp32.onnx",
        "teacher_fp32.onnx",
        "parity.json",
        "results.json",
        "results.md",
    } <= outputs
    assert (out / "config.yaml").is_file() and (out / "report.md").is_file()
    assert summary["stages"]["distill"]["status"] == "done"


def test_accuracy_targets_on_digits(compressed):
    out, summary = compressed
    teacher = summary["stages"]["teacher"]["metrics"]["val_top1"]
    student = summary["stages"]["distill"]["metrics"]["val_top1"]
    assert teacher >= 0.95 and student >= 0.93, (teacher, student)
    results = json.loads((out / "bench" / "results.json").read_text())
    rows = {r["model"]: r for r in results["models"] if r["format"] == "onnx-fp32"}
    # ONNX accuracy on the whole validation split equals PyTorch's within one image
    for name in ("teacher", "student"):
        assert abs(rows[name]["onnx_top1"] - rows[name]["pytorch_top1"]) <= 1 / rows[name]["val_samples"] + 1e-9
        lat = rows[name]["latency_b1"]
        assert 0 < lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] and lat["runs"] >= 50
        assert lat["source"] == "measured" and rows[name]["throughput"]["batch_size"] == 32
    assert rows["student"]["parameters"] < rows["teacher"]["parameters"]
    assert results["baseline_student_pytorch_top1"] is not None


def test_parity_and_onnx_checked(compressed):
    out, _ = compressed
    import onnx

    parity = json.loads((out / "export" / "parity.json").read_text())
    assert parity["student"]["passed"] and parity["student"]["samples"] == 64
    model = onnx.load(out / "export" / "model_fp32.onnx")
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch


def test_report_puts_teacher_and_student_side_by_side(compressed):
    out, _ = compressed
    report = (out / "report.md").read_text()
    for needle in (
        "| teacher | onnx-fp32",
        "| student | onnx-fp32",
        "without KD",
        "p50",
        "size (KiB)",
        "Validation top-1 in PyTorch",
    ):
        assert needle in report, needle


def test_resume_skips_everything(compressed, cli):
    out, _ = compressed
    before = json.loads((out / "manifest.json").read_text())
    result = cli("compress", "--out", out, "--resume", "--json", *FAST_BENCH)
    assert result.exit_code == 0, result.output
    after = json.loads((out / "manifest.json").read_text())
    for name in before["stages"]:
        assert after["stages"][name]["finished"] == before["stages"][name]["finished"], name


def test_inspect_and_stage_command(compressed, cli):
    out, _ = compressed
    result = cli("inspect", out, "--json")
    assert result.exit_code == 0
    manifest = json.loads(result.stdout)
    assert all(rec["outputs_verified"] and not rec["stale"] for rec in manifest["stages"].values())
    result = cli("bench", out, "--json", *FAST_BENCH)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["stages"]["bench"]["status"] == "done"
    # rerunning distill with other settings leaves export and bench stale, and says so
    result = cli("distill", out, "--epochs", "2", "--no-baseline", "--quiet")
    assert result.exit_code == 0, result.output
    stages = json.loads(cli("inspect", out, "--json").stdout)["stages"]
    assert not stages["distill"]["stale"] and stages["export"]["stale"] and stages["bench"]["stale"]
    assert "stale" in cli("inspect", out).stdout


def test_existing_run_dir_is_not_overwritten(compressed, cli, digits_teacher):
    out, _ = compressed
    result = cli("compress", "--teacher", digits_teacher, "--out", out)
    assert result.exit_code == 2 and "already holds a run; pass --resume" in result.stderr


def _edgekd(*args: str, **kw) -> subprocess.Popen:
    # the same torch thread count as this process: CPU results are bit-identical only at equal thread counts
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(torch.get_num_threads())}
    return subprocess.Popen(
        [sys.executable, "-m", "edgekd", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def test_kill_and_resume_matches_uninterrupted(tmp_path, cli, digits_teacher):
    """SIGKILL the distill stage after its first epoch, --resume, and end with the same student."""
    common = [
        "--teacher",
        str(digits_teacher),
        "--data",
        "digits",
        "--student",
        "cnn_small",
        "--epochs",
        "25",
        "--seed",
        "3",
        "--target",
        "x86-cpu",
        *FAST_BENCH,
    ]
    ref = tmp_path / "ref"
    assert cli("compress", *common, "--out", ref, "--quiet").exit_code == 0

    run = tmp_path / "killed"
    proc = _edgekd("compress", *common, "--out", str(run), "--quiet")
    ckpt = run / ".distill.partial" / "last.ckpt"  # a stage works in a staging folder until it succeeds
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), proc.stderr.read()
    done_epochs = torch.load(ckpt, weights_only=True)["epoch"]
    assert 1 <= done_epochs < 25
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["stages"]["distill"]["status"] == "running"  # cut off, not finished

    resumed = cli("compress", "--out", run, "--resume", *common)
    assert resumed.exit_code == 0, resumed.output
    assert f"resuming after epoch {done_epochs}" in resumed.stderr
    assert not ckpt.parent.exists() and (run / "distill" / "last.ckpt").is_file()

    a = json.loads((ref / "manifest.json").read_text())["stages"]["distill"]["metrics"]
    b = json.loads((run / "manifest.json").read_text())["stages"]["distill"]["metrics"]
    assert a["val_top1"] == b["val_top1"] and a["best_val_top1"] == b["best_val_top1"]
    sa = load_model_file(ref / "distill" / "student.pt").model.state_dict()
    sb = load_model_file(run / "distill" / "student.pt").model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("kind", ["torchscript", "exported_static_batch"])
def test_code_teachers_run_end_to_end(tmp_path, cli, digits_teacher, kind):
    """TorchScript and torch.export teachers distil and bench; a fixed-batch program is run in
    chunks for training and left out of the ONNX bench with its reason."""
    model = load_model_file(digits_teacher).model.eval()
    if kind == "torchscript":
        path = tmp_path / "teacher_ts.pt"
        torch.jit.save(torch.jit.script(model), str(path))
    else:
        path = tmp_path / "teacher.pt2"
        torch.export.save(torch.export.export(model, (torch.randn(4, 1, 8, 8),)), str(path))
    out = tmp_path / "run"
    refused = cli("compress", "--teacher", path, "--epochs", "2", "--out", out, "--quiet")
    assert refused.exit_code == 2 and "--trust-checkpoint" in refused.stderr and not out.exists()
    result = cli(
        "compress", "--teacher", path, "--trust-checkpoint", "--student", "cnn_small", "--epochs", "2",
        "--out", out, "--json", *FAST_BENCH,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["stages"]["teacher"]["metrics"]["val_top1"] >= 0.95
    results = json.loads((out / "bench" / "results.json").read_text())
    models = {r["model"] for r in results["models"]}
    if kind == "torchscript":
        assert models == {"teacher", "student"}
    else:
        assert models == {"student"} and "fixed batch of 4" in results["teacher_not_benchmarked"]


def test_image_folder_end_to_end(tmp_path, cli):
    """An ImageFolder of PNGs: the teacher's input size travels with its checkpoint to compress."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = tmp_path / "images"
    for i, (img, label) in enumerate(zip(digits.images[:400], digits.target[:400], strict=True)):
        folder = root / f"digit_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (img * 255 / 16).astype("uint8")
        Image.fromarray(pixels).convert("RGB").resize((16, 16)).save(folder / f"{i}.png")
    teacher = tmp_path / "teacher.pt"
    result = cli(
        "train-teacher",
        "--arch",
        "cnn_small",
        "--data",
        root,
        "--image-size",
        "16",
        "--epochs",
        "4",
        "--out",
        teacher,
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    out = tmp_path / "run"
    result = cli(
        "compress",
        "--teacher",
        teacher,
        "--data",
        root,
        "--student",
        "cnn_tiny",
        "--epochs",
        "2",
        "--out",
        out,
        "--json",
        *FAST_BENCH,
    )
    assert result.exit_code == 0, result.output
    info = json.loads((out / "teacher" / "teacher.json").read_text())
    assert info["input"]["shape"] == [3, 16, 16] and info["classes"][0] == "digit_0"
    assert info["data"]["val_samples"] == 80
