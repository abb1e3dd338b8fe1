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
from edgekd.tasks.detect.export import OUTPUT_NAMES, OnnxDetector, export_detector_onnx, read_metadata
from edgekd.tasks.detect.metrics import coco_map
from edgekd.tasks.detect.models import build_detector
from edgekd.tasks.detect.predict import predict_split
from edgekd.tasks.detect.train import train_detector
from edgekd.tasks.detect.transforms import iterate_batches

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


def _infer_template():
    """The bundle's infer.py as a module (it imports numpy only at the top)."""
    import importlib.util

    from edgekd.tasks.detect.bundle import TEMPLATE

    spec = importlib.util.spec_from_file_location("infer_detect", TEMPLATE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_raw_head_export_is_described_and_decodes_to_the_nms_export(trained, tmp_path):
    """--nms none: the metadata says how to decode; OnnxDetector's host decode + NMS and the bundle's numpy
    decode + NMS give the boxes of the export with NMS inside, and the mAP of PyTorch (within 0.005)."""
    data, model, _, _, _ = trained
    raw_path = export_detector_onnx(model, tmp_path / "raw.onnx", IMGSZ, nms=None)
    nms_path = export_detector_onnx(model, tmp_path / "nms.onnx", IMGSZ)
    meta = read_metadata(raw_path)
    assert meta["head"] == "raw" and meta["strides"] == "8,16,32" and meta["num_classes"] == "10"
    assert meta["reg_max"] == "16" and "sigmoid" in meta["scores"] and "xyxy" in meta["box_format"]
    assert "cls_p3" in meta["layout"] and read_metadata(nms_path)["head"] == "nms"
    raw, with_nms = OnnxDetector(raw_path), OnnxDetector(nms_path)
    x = next(iter(iterate_batches(data.val, IMGSZ, 4, train=False))).images
    infer = _infer_template()
    head = {"strides": [8, 16, 32], "reg_max": 16, "conf": 0.001, "iou": 0.6, "max_det": 100}
    for i, (a, b) in enumerate(zip(raw(x), with_nms(x), strict=True)):
        assert len(a["scores"]) == len(b["scores"]) > 0
        np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-5)
        np.testing.assert_allclose(a["boxes"], b["boxes"], atol=1e-3)
        boxes, scores, classes = infer.raw_detections(raw.session.run(None, {"images": x[i : i + 1].numpy()}), head,
                                                      IMGSZ, None)  # fmt: skip
        k = min(len(scores), 50)  # the numpy NMS may break a tie of equal scores another way, past the top
        np.testing.assert_allclose(scores[:k], b["scores"][:k], atol=1e-5)
        np.testing.assert_allclose(boxes[:k], b["boxes"][:k], atol=1e-3)
        assert (classes[:k] == b["labels"][:k].numpy()).mean() > 0.95
    torch_map = coco_map(predict_split(model, data.val, IMGSZ), data.val, data.names, data.category_ids)
    raw_map = coco_map(predict_split(model, data.val, IMGSZ, runner=raw), data.val, data.names, data.category_ids)
    assert raw_map["mAP"] > 0.03 and abs(torch_map["mAP"] - raw_map["mAP"]) < 0.005
