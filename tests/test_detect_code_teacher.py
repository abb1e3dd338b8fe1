"""Detector teachers given as code (TorchScript, torch.export) with --trust-checkpoint: they predict as
the module they came from, KD methods apply as far as the program exposes what they need (else a
one-line refusal naming what applies), and without --trust-checkpoint the file is refused (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.tasks.detect.checkpoint import load_detector
from edgekd.tasks.detect.code_teacher import CodeDetector
from edgekd.tasks.detect.kd import applicable
from edgekd.tasks.detect.models import build_detector, describe
from edgekd.tasks.detect.predict import detect_batch

IMGSZ = 64


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, nn.Module]:
    """An edet_p on digits-detect's 10 classes, saved by torch.export for a fixed batch of 2."""
    torch.manual_seed(0)
    model = build_detector("edet_p", 10).eval()
    path = tmp_path_factory.mktemp("code") / "teacher.pt2"
    torch.export.save(torch.export.export(model, (torch.rand(2, 3, IMGSZ, IMGSZ),)), str(path))
    return path, model


def test_an_exported_edge_detector_is_a_full_teacher(exported):
    path, model = exported
    with pytest.raises(EdgekdError, match="--trust-checkpoint"):
        load_detector(path, arch=None, num_classes=10, imgsz=IMGSZ)
    teacher, info = load_detector(path, arch=None, num_classes=10, imgsz=IMGSZ, trust=True)
    assert info["kind"] == "exported_program" and describe(teacher)["strides"] == [8, 16, 32]
    x = torch.rand(5, 3, IMGSZ, IMGSZ)  # 5 images through a program fixed at batch 2: padded chunks
    for a, b in zip(detect_batch(teacher, x), detect_batch(model, x), strict=True):
        assert torch.allclose(a["scores"], b["scores"], atol=1e-5) and torch.equal(a["labels"], b["labels"])
    student = build_detector("edet_p", 10)
    assert all(applicable(m, teacher, student, IMGSZ) is None for m in ("dense_kd", "ld", "bounded_reg", "pkd"))
    with pytest.raises(EdgekdError, match="classes"):
        load_detector(path, arch=None, num_classes=3, imgsz=IMGSZ, trust=True)
    with pytest.raises(EdgekdError, match="detect.imgsz=64"):
        load_detector(path, arch=None, num_classes=10, imgsz=96, trust=True)


class _NoFeatures(nn.Module):
    """An edge detector program that returns only its head's maps."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x)
        return {"cls": out["cls"], "reg": out["reg"]}


def test_feature_methods_are_refused_for_a_program_without_features(exported):
    _, model = exported
    teacher = CodeDetector(_NoFeatures(model), "torchscript", 10, IMGSZ)
    student = build_detector("edet_p", 10)
    assert applicable("dense_kd", teacher, student, IMGSZ) is None
    refusal = applicable("pkd", teacher, student, IMGSZ)
    assert "exposes no feature maps" in refusal and "pseudo_label" in refusal and "\n" not in refusal


def test_a_scripted_torchvision_detector_teaches_by_its_detections(tmp_path):
    torch.manual_seed(0)
    eager = build_detector("tv:ssdlite320_mobilenet_v3_large", 3, IMGSZ).eval()
    path = tmp_path / "ssd_ts.pt"
    torch.jit.save(torch.jit.script(eager.model), str(path))
    teacher, info = load_detector(path, arch=None, num_classes=3, imgsz=IMGSZ, trust=True)
    assert info["kind"] == "torchscript" and teacher.name == "torchscript:SSD"
    x = torch.rand(2, 3, IMGSZ, IMGSZ)
    got, want = teacher.detect(x, 0.01, 0.6, 20), eager.detect(x, 0.01, 0.6, 20)
    for a, b in zip(got, want, strict=True):
        assert len(a["scores"]) > 0 and torch.allclose(a["scores"], b["scores"], atol=1e-5)
        assert torch.equal(a["labels"], b["labels"]) and int(a["labels"].max()) < 3  # background removed
    refusal = applicable("dense_kd", teacher, build_detector("edet_p", 3), IMGSZ)
    assert "response methods need" in refusal and "pseudo_label" in refusal
    with pytest.raises(EdgekdError, match="predicts 3 classes"):
        load_detector(path, arch=None, num_classes=5, imgsz=IMGSZ, trust=True)


def _compress_args(path: Path, out: Path) -> tuple:
    return ("compress", "--teacher", path, "--data", "digits-detect", "--student", "edet_p", "--epochs", "1",
            "--max-train-samples", "16", "--no-quantize", "--set", f"detect.imgsz={IMGSZ}", "--set", "bench.runs=50",
            "--set", "bench.sessions=1", "--set", "bench.throughput_runs=3",
            "--set", "detect.kd={dense_kd: 1.0, pseudo_label: 1.0}", "--out", out)  # fmt: skip


def test_compress_refuses_a_code_teacher_without_trust_checkpoint(exported, cli, tmp_path):
    out = tmp_path / "run"
    refused = cli(*_compress_args(exported[0], out), "--quiet")
    assert refused.exit_code == 2 and "--trust-checkpoint" in refused.stderr and not out.exists()
    assert refused.stderr.strip().count("\n") == 0


@pytest.mark.slow  # a whole run (about 13 minutes on the shared 2-core box under load; the unit tests above are quick)
def test_compress_with_an_exported_teacher(exported, cli, tmp_path):
    out = tmp_path / "run"
    result = cli(*_compress_args(exported[0], out), "--trust-checkpoint", "--json")
    assert result.exit_code == 0, result.output
    stages = json.loads(result.stdout)["stages"]
    assert stages["distill"]["metrics"]["kd"] == {"dense_kd": 1.0, "pseudo_label": 1.0}
    teacher = json.loads((out / "teacher" / "teacher.json").read_text())
    assert teacher["kind"] == "exported_program" and teacher["arch"]["name"] == "exported_program:teacher.pt2"
