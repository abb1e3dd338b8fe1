"""``edgekd compress --task detect`` end to end on digits-detect, and the bundle's infer.py scored by
someone else: pycocotools on the COCO-style JSON it writes gives the mAP the bench reported.

The default suite runs the pipeline once with an untrained teacher and one short epoch (every stage,
file and interface); the slow suite trains teacher and student for 60 steps each, so that the
bundle's mAP check compares real numbers."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from edgekd.tasks import get_task, resolve_task
from edgekd.tasks.detect.checkpoint import load_detector, save_detector
from edgekd.tasks.detect.data import load_detection_data
from edgekd.tasks.detect.metrics import coco_ground_truth
from edgekd.tasks.detect.models import build_detector
from edgekd.tasks.detect.train import train_detector

IMGSZ = 96


@pytest.fixture(scope="module")
def data():
    return load_detection_data("digits-detect", seed=0, log=None)


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory) -> Path:
    """An edet_p trained for 60 steps on 192 canvases (about 10 s)."""
    torch.manual_seed(0)
    data = load_detection_data("digits-detect", seed=0, log=None)
    data.train = data.train.subset(192)
    model = build_detector("edet_p", data.num_classes, IMGSZ)
    train_detector(model, data, epochs=5, lr=4e-3, batch_size=16, imgsz=IMGSZ, seed=0, hflip=0.0)
    out = tmp_path_factory.mktemp("det") / "teacher.pt"
    save_detector(out, model, arch="edet_p", names=data.names, category_ids=data.category_ids, imgsz=IMGSZ)
    return out


def _compress(cli, teacher: Path, out: Path, epochs: int, samples: int, extra: tuple[str, ...] = ()) -> Path:
    result = cli(
        "compress", "--teacher", teacher, "--data", "digits-detect", "--target", "jetson-orin-nano",
        "--student", "edet_p", "--epochs", epochs, "--max-train-samples", samples, "--set", f"detect.imgsz={IMGSZ}",
        "--set", "detect.lr=0.004", "--set", "bench.runs=50", "--set", "bench.sessions=1",
        "--set", "bench.throughput_runs=3", "--out", out, "--quiet", *extra,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def quick_run(cli, data, tmp_path_factory) -> Path:
    """One epoch on 32 canvases from an untrained edet_p teacher: every stage, quickly."""
    folder = tmp_path_factory.mktemp("detquick")
    model = build_detector("edet_p", data.num_classes, IMGSZ)
    save_detector(folder / "t.pt", model, arch="edet_p", names=data.names, category_ids=data.category_ids, imgsz=IMGSZ)
    quick_int8 = ("--set", "quantize.calibrator=max", "--set", "quantize.sensitivity=false", "--max-drop", "100")
    return _compress(cli, folder / "t.pt", folder / "run", epochs=1, samples=32, extra=("--baseline", *quick_int8))


@pytest.fixture(scope="module")
def detect_run(cli, teacher_file, tmp_path_factory) -> Path:
    return _compress(cli, teacher_file, tmp_path_factory.mktemp("detrun") / "run", epochs=5, samples=192)


def test_the_task_comes_from_the_data_or_the_teacher():
    from edgekd.config import build_config
    from edgekd.errors import EdgekdError

    assert resolve_task(build_config(None, {"data.source": "digits-detect"})).task == "detect"
    assert resolve_task(build_config(None, {"teacher.arch": "tv:fcos_resnet50_fpn"})).task == "detect"
    assert resolve_task(build_config(None, {"data.source": "digits"})).task == "classify"
    with pytest.raises(EdgekdError, match="--task"):
        resolve_task(build_config(None, {"data.source": "digits-detect", "task": "classify"}))
    assert "pseudo_label" in get_task("detect").kd_methods() and "dkd" in get_task("classify").kd_methods()


def test_compress_detect_writes_every_stage(quick_run):
    detect_run = quick_run
    manifest = json.loads((detect_run / "manifest.json").read_text())
    assert [s for s, r in manifest["stages"].items() if r["status"] == "done"] == [
        "teacher", "distill", "quantize", "export", "bench", "package",
    ]  # fmt: skip
    assert yaml.safe_load((detect_run / "config.yaml").read_text())["task"] == "detect"
    results = json.loads((detect_run / "bench" / "results.json").read_text())
    assert all("map50_95" in r and "map50" in r for r in results["models"])
    assert {(r["model"], r["format"]) for r in results["models"]} >= {
        ("teacher", "pytorch-fp32"),
        ("student", "onnx-fp32"),
    }
    parity = json.loads((detect_run / "export" / "parity.json").read_text())["student"]
    assert parity["passed"] and parity["map_diff"] <= 0.005
    guard = manifest["stages"]["distill"]["metrics"]["guard"]  # an untrained teacher is not clearly better
    assert guard["clearly_better"] is False and "not clearly better" in guard["verdict"]
    assert "Teacher guard" in (detect_run / "report.md").read_text()
    for png in ("pr_curve.png", "detections.png"):
        assert (detect_run / "bench" / png).stat().st_size > 1000, png
    report = (detect_run / "report.md").read_text()
    assert "![precision-recall at IoU 0.5](bench/pr_curve.png)" in report
    assert "mAP@[.5:.95]" in report and "## INT8" in report and "INT8 mAP@[.5:.95]" in report
    import onnx

    for name in ("model_fp32.onnx", "model_int8.onnx", "model_int8_cpu.onnx"):
        outputs = [o.name for o in onnx.load(str(detect_run / "export" / name)).graph.output]
        assert outputs == ["num_dets", "det_boxes", "det_scores", "det_classes"], name
    quantize = json.loads((detect_run / "quantize" / "metrics.json").read_text())
    assert {"fp32_val_map50_95", "ptq_val_map50_95", "qat_val_map50_95", "val_map50_95"} <= set(quantize)
    int8 = json.loads((detect_run / "export" / "int8.json").read_text())
    assert int8["trt_rules"]["passed"] and int8["trt_rules"]["quantized_layers"] == 68
    assert json.loads((detect_run / "export" / "parity.json").read_text())["student_int8_cpu"]["passed"]
    assert "model_int8.onnx" in (detect_run / "export" / "build_engine.sh").read_text()


def _bundle_map(run: Path, data, tmp_path: Path) -> float:
    """The bundle's infer.py on the validation images, its JSON scored with pycocotools (mAP@[.5:.95])."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    bundle = next(p for p in (run / "package").iterdir() if p.is_dir())
    images = tmp_path / "val"
    images.mkdir()
    for i in range(len(data.val)):
        Image.fromarray(data.val.image(i).permute(1, 2, 0).numpy()).save(images / data.val.file_names[i])
    out_json, drawn = tmp_path / "results.json", tmp_path / "drawn"
    done = subprocess.run(
        [sys.executable, str(bundle / "infer.py"), str(images), "--conf", "0.001", "--json", str(out_json),
         "--out", str(drawn)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(list(drawn.iterdir())) == len(data.val)
    gt_data = coco_ground_truth(data.val, data.names, data.category_ids)
    by_name = {im["file_name"]: im["id"] for im in gt_data["images"]}
    dets = [{**d, "image_id": by_name[d.pop("file_name")]} for d in json.loads(out_json.read_text())]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = gt_data
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


@pytest.mark.slow
def test_trained_student_and_bundle_json_scores_to_the_bench_map(detect_run, data, tmp_path):
    assert json.loads((detect_run / "bench" / "results.json").read_text())["summary"]["student_map50_95"] > 0.0
    scored = _bundle_map(detect_run, data, tmp_path)
    reported = json.loads((detect_run / "bench" / "results.json").read_text())["summary"]["student_onnx_map50_95"]
    assert abs(scored - reported) <= 0.01, (scored, reported)


def test_nms_none_exports_the_raw_head_and_the_bundle_decodes_it(quick_run, cli, data, tmp_path):
    """`edgekd export RUN --nms none` reruns export onwards only; every ONNX is the raw head, parity and
    bench decode it on the host, and the bundle's infer.py (numpy decode + NMS) scores to bench's mAP."""
    import onnx

    run = shutil.copytree(quick_run, tmp_path / "run")
    before = json.loads((run / "manifest.json").read_text())["stages"]
    assert cli("export", run, "--nms", "none", "--quiet").exit_code == 0
    result = cli("package", run, "--quiet")
    assert result.exit_code == 0, result.output
    after = json.loads((run / "manifest.json").read_text())["stages"]
    for stage in ("teacher", "distill", "quantize"):  # detect.nms is left out of their fingerprints
        assert after[stage]["finished"] == before[stage]["finished"], stage
    for name in ("model_fp32.onnx", "model_int8.onnx", "model_int8_cpu.onnx"):
        model = onnx.load(str(run / "export" / name))
        assert [o.name for o in model.graph.output][0] == "cls_p3", name
        assert {p.key: p.value for p in model.metadata_props}["edgekd.detect.head"] == "raw", name
    parity = json.loads((run / "export" / "parity.json").read_text())
    assert all(parity[k]["passed"] and parity[k]["head"] == "none" for k in ("student", "student_int8_cpu"))
    results = json.loads((run / "bench" / "results.json").read_text())
    assert results["head"] == "none" and "raw head" in (run / "bench" / "results.md").read_text()
    assert "raw head (--nms none)" in (run / "report.md").read_text()
    assert after["package"]["metrics"]["model_format"] == "onnx-fp32-raw"
    scored = _bundle_map(run, data, tmp_path)
    assert abs(scored - results["summary"]["student_onnx_map50_95"]) <= 0.01


class _StrongerTeacher:
    """``json`` for the bench module, reading teacher.json with the teacher's mAP raised to 0.9 (editing the
    file instead would change the teacher stage's outputs and rerun every stage after it)."""

    def __init__(self):
        self.dumps = json.dumps

    @staticmethod
    def loads(text):
        data = json.loads(text)
        return {**data, "val_map50_95": 0.9} if isinstance(data, dict) and "per_class_ap" in data else data


def test_max_map_drop_gates_bench(quick_run, cli, tmp_path):
    """--max-map-drop is --max-accuracy-drop by its detection name: a failed gate exits 1 with mAP wording."""
    run = shutil.copytree(quick_run, tmp_path / "run")
    with pytest.MonkeyPatch.context() as mp:  # the 1-epoch student is far below a 0.9 mAP teacher
        mp.setattr("edgekd.tasks.detect.report.json", _StrongerTeacher())
        failed = cli("bench", run, "--max-map-drop", "5", "--quiet")
    assert failed.exit_code == 1, failed.output
    line = failed.stderr.strip().splitlines()[-1]
    assert "gate(s) failed" in line and "max_map_drop" in line and "mAP@[.5:.95]" in line and "over by" in line
    passed = cli("bench", run, "--max-accuracy-drop", "100", "--json")
    assert passed.exit_code == 0, passed.output
    assert json.loads(passed.stdout)["stages"]["bench"]["metrics"]["gates_failed"] == 0
    (gate,) = json.loads((run / "bench" / "results.json").read_text())["gates"]
    assert gate["gate"] == "max_map_drop" and gate["status"] == "passed" and gate["limit"] == 100
    both = cli("bench", run, "--max-map-drop", "1", "--max-accuracy-drop", "2")
    assert both.exit_code == 2 and "pass one of them" in both.stderr


def test_compress_takes_max_map_drop(cli, tmp_path):
    done = cli("compress", "--data", "digits-detect", "--teacher", tmp_path / "none.pt", "--max-map-drop", "1",
               "--max-accuracy-drop", "2", "--out", tmp_path / "run")  # fmt: skip
    assert done.exit_code == 2 and "--max-map-drop 1" in done.stderr and not (tmp_path / "run").exists()


def test_bad_infer_input_is_one_line(quick_run, tmp_path):
    bundle = next(p for p in (quick_run / "package").iterdir() if p.is_dir())
    done = subprocess.run([sys.executable, str(bundle / "infer.py"), str(tmp_path / "nothing")], capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "no image or folder" in done.stderr


def test_a_teacher_state_dict_needs_its_arch(data, tmp_path):
    from edgekd.errors import EdgekdError

    model = build_detector("edet_p", data.num_classes, IMGSZ)
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(EdgekdError, match="--teacher-arch"):
        load_detector(tmp_path / "sd.pt", arch=None, num_classes=data.num_classes, imgsz=IMGSZ)
    loaded, info = load_detector(tmp_path / "sd.pt", arch="edet_p", num_classes=data.num_classes, imgsz=IMGSZ)
    assert info["kind"] == "state_dict"
    with pytest.raises(EdgekdError, match="classes"):
        save_detector(tmp_path / "e.pt", model, arch="edet_p", names=["a"], category_ids=[1], imgsz=IMGSZ)
        load_detector(tmp_path / "e.pt", arch=None, num_classes=data.num_classes, imgsz=IMGSZ)


def test_the_map_drop_gate_in_points():
    from edgekd.tasks.detect.report import _gate

    results = {"summary": {"map_drop": 0.12, "student_onnx_map50_95": 0.2, "teacher_map50_95": 0.32}}
    (failed,) = _gate(results, 5)
    assert failed["status"] == "failed" and "drop 12.00 points > 5 (over by 7.00 points)" in failed["message"]
    assert "mAP@[.5:.95] 0.2000" in failed["message"] and "teacher 0.3200" in failed["message"]
    assert _gate(results, 12.5)[0]["status"] == "passed" and _gate(results, None) == []
