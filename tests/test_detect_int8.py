"""INT8 for detectors: fake quantizers in an edge detector (Concat scales shared), the INT8 ONNX with
and without NMS against the fake-quant model in ONNX Runtime, the TensorRT rules checker on detector
graphs (and on hand-made graphs that break each placement rule), QAT-KD and the INT8 checkpoint."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from edgekd.export.trt_rules import check_trt_rules
from edgekd.quant.sensitivity import layer_sensitivity
from edgekd.tasks.detect.data import load_detection_data
from edgekd.tasks.detect.export import OnnxDetector, read_metadata
from edgekd.tasks.detect.models import build_detector
from edgekd.tasks.detect.quantize import (
    calibration_batches,
    export_detector_int8,
    load_detector_int8,
    prepare_detector_int8,
    qat_kd,
    save_detector_int8,
)

IMGSZ = 64


@pytest.fixture(scope="module")
def data():
    d = load_detection_data("digits-detect", seed=0, log=None)
    d.train = d.train.subset(48)
    d.val = d.val.subset(16)
    return d


@pytest.fixture(scope="module")
def calibrated(data):
    torch.manual_seed(0)
    model = build_detector("edet_p", data.num_classes, IMGSZ).eval()
    qdet = prepare_detector_int8(model)
    qdet.qm.calibrate(calibration_batches(data, IMGSZ, 32, 16), "max")
    return model, qdet.eval()


def test_concat_inputs_and_output_share_one_scale(calibrated):
    _, qdet = calibrated
    table = qdet.qm.scale_table()
    assert table["shared_scales"], "the CSP blocks and the neck have Concats"
    for group in table["shared_scales"]:
        assert len({table["points"][p]["amax"] for p in group}) == 1, group
    model = calibrated[0]
    assert len(qdet.qm.layers) == sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) == 68


def test_int8_onnx_matches_fake_quant_and_passes_the_rules(calibrated, data, tmp_path):
    _, qdet = calibrated
    info = export_detector_int8(qdet, tmp_path / "raw.onnx", tmp_path / "raw_cpu.onnx", imgsz=IMGSZ, nms=None)
    rules = info["trt_rules"]
    assert rules["passed"] and rules["quantized_layers"] == 68, rules["violations"][:3]
    x = calibration_batches(data, IMGSZ, 4, 4)[0]
    with torch.no_grad():
        out = qdet(x)
    ref = torch.cat([m.flatten(1) for m in (*out["cls"], *out["reg"])], 1).numpy()
    for name in ("raw_cpu.onnx", "raw.onnx"):
        sess = ort.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"])
        got = np.concatenate([o.reshape(o.shape[0], -1) for o in sess.run(None, {"images": x.numpy()})], 1)
        step = float(np.abs(ref).max()) / 127
        assert np.mean(np.abs(got - ref) <= 2 * step + 1e-4) > 0.99, name  # within two steps of the grid


def test_int8_onnx_with_nms_keeps_decode_and_nms_in_float(calibrated, data, tmp_path):
    _, qdet = calibrated
    info = export_detector_int8(
        qdet, tmp_path / "m.onnx", tmp_path / "m_cpu.onnx", imgsz=IMGSZ, nms={"conf": 0.001, "iou": 0.6, "max_det": 50}
    )
    assert info["trt_rules"]["passed"]
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    assert [o.name for o in graph.output] == ["num_dets", "det_boxes", "det_scores", "det_classes"]
    assert any(n.op_type == "NonMaxSuppression" for n in graph.node)
    images = calibration_batches(data, IMGSZ, 4, 4)[0]
    for name in ("m.onnx", "m_cpu.onnx"):
        dets = OnnxDetector(tmp_path / name)(images)
        assert len(dets) == 4 and all(d["boxes"].shape[-1] == 4 for d in dets)


def test_int8_raw_head_is_described_and_decodes_like_the_nms_flavour(calibrated, data, tmp_path):
    """--nms none on the INT8 export: the raw head keeps its metadata, and OnnxDetector's host decode +
    NMS gives the detections of the INT8 graph with NMS inside."""
    torch.manual_seed(1)
    model = build_detector("edet_p", data.num_classes, IMGSZ).eval()
    for branch in (*model.head.cls, *model.head.reg):  # an untrained head ties every score and box: spread them
        torch.nn.init.normal_(branch[-1].weight, std=0.5)
    batches = calibration_batches(data, IMGSZ, 32, 16)
    model.train()
    with torch.no_grad():  # and the BatchNorm statistics of the data, else the features fade to ~0
        for x in batches:
            model(x)
    qdet = prepare_detector_int8(model.eval())
    qdet.qm.calibrate(batches, "max")
    qdet.eval()
    nms = {"conf": 0.001, "iou": 0.6, "max_det": 50}
    export_detector_int8(qdet, tmp_path / "raw.onnx", tmp_path / "raw_cpu.onnx", imgsz=IMGSZ, nms=None)
    export_detector_int8(qdet, tmp_path / "nms.onnx", None, imgsz=IMGSZ, nms=nms)
    for name in ("raw.onnx", "raw_cpu.onnx"):
        meta = read_metadata(tmp_path / name)
        assert meta["head"] == "raw" and meta["strides"] == "8,16,32" and meta["reg_max"] == "16", name
    images = calibration_batches(data, IMGSZ, 4, 4)[0]
    raw = OnnxDetector(tmp_path / "raw.onnx", nms=nms)
    assert raw.raw and raw.meta["num_classes"] == str(data.num_classes)
    for a, b in zip(raw(images), OnnxDetector(tmp_path / "nms.onnx")(images), strict=True):
        assert len(a["scores"]) == len(b["scores"]) > 0
        assert torch.equal(a["labels"], b["labels"])
        np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-5)
        np.testing.assert_allclose(a["boxes"], b["boxes"], atol=1e-3)


def _qdq(name: str, x: str, scale: float, nodes: list, inits: list) -> str:
    inits += [
        numpy_helper.from_array(np.array(scale, np.float32), f"{name}_s"),
        numpy_helper.from_array(np.array(0, np.int8), f"{name}_z"),
    ]
    nodes += [
        helper.make_node("QuantizeLinear", [x, f"{name}_s", f"{name}_z"], [f"{name}_q"], name=f"{name}_Q"),
        helper.make_node(
            "DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [f"{name}_dq"], name=f"{name}_DQ"
        ),
    ]
    return f"{name}_dq"


def _graph(concat_scales=(0.1, 0.1), add_both=True, qdq_after=False) -> onnx.ModelProto:
    """x -> Relu a, Relu b -> Concat(a, b) -> quantized Conv -> Add(conv, b) -> Sigmoid -> y."""
    nodes, inits = [], []
    nodes += [helper.make_node("Relu", ["x"], ["a"], name="ra"), helper.make_node("Relu", ["x"], ["b"], name="rb")]
    qa = _qdq("qa", "a", concat_scales[0], nodes, inits)
    qb = _qdq("qb", "b", concat_scales[1], nodes, inits)
    nodes.append(helper.make_node("Concat", [qa, qb], ["cat"], name="cat", axis=1))
    qc = _qdq("qc", "cat", concat_scales[0], nodes, inits)
    w = np.ones((2, 4, 1, 1), np.int8)
    inits += [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(np.full(2, 0.01, np.float32), "w_s"),
        numpy_helper.from_array(np.zeros(2, np.int8), "w_z"),
    ]
    nodes.append(helper.make_node("DequantizeLinear", ["w", "w_s", "w_z"], ["w_dq"], name="w_DQ", axis=0))
    nodes.append(helper.make_node("Conv", [qc, "w_dq"], ["conv"], name="conv"))
    qconv = _qdq("qconv", "conv", 0.1, nodes, inits)
    nodes.append(helper.make_node("Add", [qconv, qb if add_both else "b"], ["sum"], name="add"))
    w2 = np.ones((2, 2, 1, 1), np.int8)
    inits += [numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(np.full(2, 0.01, np.float32), "w2_s")]
    inits.append(numpy_helper.from_array(np.zeros(2, np.int8), "w2_z"))
    nodes.append(helper.make_node("DequantizeLinear", ["w2", "w2_s", "w2_z"], ["w2_dq"], name="w2_DQ", axis=0))
    qs = _qdq("qs", "sum", 0.1, nodes, inits)
    nodes.append(helper.make_node("Conv", [qs, "w2_dq"], ["head"], name="head"))
    last = "head"
    if qdq_after:
        last = _qdq("qpost", "head", 0.1, nodes, inits)
    nodes.append(helper.make_node("Sigmoid", [last], ["y"], name="decode"))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_rules_checker_catches_each_placement_rule():
    assert check_trt_rules(_graph())["passed"], check_trt_rules(_graph())["violations"]
    bad = check_trt_rules(_graph(concat_scales=(0.1, 0.2)))["violations"]
    assert any("Concat cat" in v and "different scales" in v for v in bad)
    bad = check_trt_rules(_graph(add_both=False))["violations"]
    assert any("Add add" in v and "some inputs are quantized" in v for v in bad)
    bad = check_trt_rules(_graph(qdq_after=True))["violations"]
    assert any("qpost_Q" in v and "no Conv/Gemm/MatMul reads downstream" in v for v in bad)


def test_qat_kd_trains_the_fake_quant_detector_and_the_checkpoint_round_trips(calibrated, data, tmp_path):
    model, qdet = calibrated
    before = {k: v.clone() for k, v in qdet.qm.state_dict().items()}
    history = qat_kd(qdet, model, data, epochs=1, lr=1e-4, batch_size=16, imgsz=IMGSZ, seed=0, hflip=0.0)
    assert history["steps"] == 3
    assert {"kd_dense_kd", "kd_ld", "kd_mimic"} <= set(history["epochs"][0])
    changed = [k for k, v in qdet.qm.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.endswith("weight") for k in changed)
    assert all(not k.endswith("amax") for k in changed), "activation ranges stay at their calibrated values"
    qdet.qm.set_skipped([next(iter(qdet.qm.layers))])
    path = save_detector_int8(
        tmp_path / "q.pt", qdet, arch="edet_p", names=data.names, category_ids=data.category_ids, imgsz=IMGSZ
    )
    loaded, meta = load_detector_int8(path)
    assert loaded.qm.skipped == qdet.qm.skipped and meta["arch"] == "edet_p"
    x = calibration_batches(data, IMGSZ, 2, 2)[0]
    with torch.no_grad():
        a, b = qdet.eval()(x), loaded(x)
    assert all(torch.allclose(p, q) for p, q in zip(a["cls"], b["cls"], strict=True))
    qdet.qm.set_skipped([])


def test_sensitivity_ranks_layers_by_output_distortion(calibrated, data):
    from edgekd.tasks.detect.int8_stages import _flat, output_distortion

    _, qdet = calibrated
    batches = calibration_batches(data, IMGSZ, 8, 8)
    qdet.qm.enable_only(None)
    reference = [_flat(qdet(x)) for x in batches]
    assert output_distortion(qdet, batches, reference) == 0.0
    qdet.qm.set_skipped([])
    result = layer_sensitivity(qdet.qm, lambda: -output_distortion(qdet, batches, reference))
    drops = list(result["layers"].values())
    assert len(drops) == 68 and drops == sorted(drops, reverse=True) and drops[0] > 0
    assert all(layer.enabled for layer in qdet.qm.layers.values())  # restored
