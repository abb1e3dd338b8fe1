"""A tiny edge student trains on digits-detect to a real mAP; its ONNX export (NMS inside) matches PyTorch.

Measured (edet_p, 192 canvases of 96 px, 5 epochs = 60 steps, 1 CPU thread, seed 0, 48 val canvases):
mAP@.5 0.000 untrained -> 0.126 trained, mAP@[.5:.95] 0.057, in about 10 s of training; ONNX Runtime
mAP 0.0571 / mAP@.5 0.1268 against PyTorch 0.0569 / 0.1262. Thresholds sit about half-way to zero.
"""

from __future__ import annotations

import time

import numpy as np
import onnx
import pytest
import torch

from edgekd.errors import EdgekdError
from edgekd.tasks.detect.data import load_detection_data
from edgekd.tasks.detect.export import OUTPUT_NAMES, OnnxDetector, export_detector_onnx
from edgekd.tasks.detect.metrics import coco_map
from edgekd.tasks.detect.models import build_detector
from edgekd.tasks.detect.predict import predict_split
from edgekd.tasks.detect.train import train_detector

torch.set_num_threads(1)
IMGSZ = 96


@pytest.fixture(scope="module")
def trained():
    data = load_detection_data("digits-detect", n_train=192, n_val=48, canvas=IMGSZ, size_range=(15, 32), seed=0)
    model = build_detector("edet_p", data.num_classes)
    before = coco_map(predict_split(model, data.val, IMGSZ), data.val, data.names, data.category_ids)
    start = time.perf_counter()
    hist = train_detector(model, data, epochs=5, lr=0.006, batch_size=16, imgsz=IMGSZ, seed=0, hflip=0.0)
    seconds = time.perf_counter() - start
    return data, model, before, hist, seconds


def test_tiny_student_learns_digits_detect(trained):
    data, model, before, hist, seconds = trained
    after = coco_map(predict_split(model, data.val, IMGSZ), data.val, data.names, data.category_ids)
    print(
        f"edet_p digits-detect: {hist['steps']} steps in {seconds:.1f} s, mAP@.5 {before['mAP50']:.3f} -> "
        f"{after['mAP50']:.3f}, mAP {after['mAP']:.3f}"
    )
    assert hist["steps"] == 60
    assert hist["epochs"][-1]["total"] < hist["epochs"][0]["total"]
    assert before["mAP50"] < 0.02
    assert after["mAP50"] > 0.07 and after["mAP"] > 0.03


def test_onnx_interface_and_map_parity(trained, tmp_path):
    data, model, _, _, _ = trained
    path = export_detector_onnx(model, tmp_path / "det.onnx", IMGSZ)
    graph = onnx.load(path).graph
    assert [i.name for i in graph.input] == ["images"] and [o.name for o in graph.output] == OUTPUT_NAMES
    assert "NonMaxSuppression" in {n.op_type for n in graph.node}
    runner = OnnxDetector(path)
    out = runner.run(torch.rand(2, 3, IMGSZ, IMGSZ))
    assert out["num_dets"].dtype == np.int32 and out["num_dets"].shape == (2, 1)
    assert out["det_boxes"].dtype == np.float32 and out["det_boxes"].shape == (2, 100, 4)
    assert out["det_scores"].dtype == np.float32 and out["det_scores"].shape == (2, 100)
    assert out["det_classes"].dtype == np.int32 and out["det_classes"].shape == (2, 100)
    torch_map = coco_map(predict_split(model, data.val, IMGSZ), data.val, data.names, data.category_ids)
    ort_map = coco_map(predict_split(model, data.val, IMGSZ, runner=runner), data.val, data.names, data.category_ids)
    print(
        f"mAP torch {torch_map['mAP']:.4f} / ORT {ort_map['mAP']:.4f}; "
        f"mAP@.5 torch {torch_map['mAP50']:.4f} / ORT {ort_map['mAP50']:.4f}"
    )
    assert abs(torch_map["mAP"] - ort_map["mAP"]) < 0.005
    assert abs(torch_map["mAP50"] - ort_map["mAP50"]) < 0.005


def test_raw_head_export_matches_pytorch(trained, tmp_path):
    _, model, _, _, _ = trained
    path = export_detector_onnx(model, tmp_path / "raw.onnx", IMGSZ, nms=None)
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    out = OnnxDetector(path).run(x)
    with torch.no_grad():
        ref = model.eval()(x)
    assert list(out) == ["cls_p3", "cls_p4", "cls_p5", "reg_p3", "reg_p4", "reg_p5"]
    for name, r in zip(out, [*ref["cls"], *ref["reg"]], strict=True):
        np.testing.assert_allclose(out[name], r.numpy(), atol=1e-4)


def test_export_refuses_non_edge_models_and_bad_sizes(tmp_path):
    with pytest.raises(EdgekdError, match="multiple of 32"):
        export_detector_onnx(build_detector("edet_p", 2), tmp_path / "x.onnx", 100)
    with pytest.raises(EdgekdError, match="edet_"):
        export_detector_onnx(build_detector("tv:ssdlite320_mobilenet_v3_large", 2), tmp_path / "x.onnx", 320)
