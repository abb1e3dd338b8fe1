"""Edge detector pieces: decode, TAL assignment, loss, NMS reference vs ONNX, metrics, the detector zoo."""

from __future__ import annotations

import pytest
import torch

from edgekd.errors import EdgekdError
from edgekd.tasks.detect.assign import pad_targets, task_aligned_assign
from edgekd.tasks.detect.data import load_detection_data
from edgekd.tasks.detect.decode import anchor_points, box_to_distance, distance_to_box
from edgekd.tasks.detect.edge_detector import SIZES
from edgekd.tasks.detect.loss import detection_loss, dfl_loss
from edgekd.tasks.detect.metrics import coco_map, results_json
from edgekd.tasks.detect.models import DETECTOR_NAMES, build_detector, describe
from edgekd.tasks.detect.nms import EfficientNMSOutputs, nms_indices

torch.set_num_threads(1)


def test_anchor_points_and_distance_roundtrip():
    pts, strides = anchor_points([torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 1, 1)], (8, 16))
    assert pts.tolist() == [[4, 4], [12, 4], [4, 12], [12, 12], [8, 8]] and strides[:, 0].tolist() == [8] * 4 + [16]
    boxes = torch.tensor([[0.0, 0.0, 10.0, 20.0]]).expand(5, 4)
    torch.testing.assert_close(distance_to_box(pts, box_to_distance(pts, boxes)), boxes)


def test_dfl_loss_hand_value():
    # target 1.25 bins between bins 1 and 2: -(0.75 log p1 + 0.25 log p2) with uniform p = 1/4 -> log 4
    logits = torch.zeros(1, 16)
    assert dfl_loss(logits, torch.full((1, 4), 1.25), 4).item() == pytest.approx(torch.log(torch.tensor(4.0)).item())


def test_task_aligned_assign_picks_the_aligned_anchor():
    points = torch.tensor([[5.0, 5.0], [15.0, 5.0], [50.0, 50.0]])
    gt_boxes, gt_labels, gt_mask = pad_targets(
        [{"boxes": torch.tensor([[0.0, 0.0, 20.0, 10.0]]), "labels": torch.tensor([1])}]
    )
    scores = torch.tensor([[[0.1, 0.9], [0.1, 0.2], [0.1, 0.9]]])
    boxes = torch.tensor([[[0.0, 0.0, 20.0, 10.0], [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 20.0, 10.0]]])
    a = task_aligned_assign(scores, boxes, points, gt_boxes, gt_labels, gt_mask, topk=1)
    assert a.fg.tolist() == [[True, False, False]]  # anchor 2 is as good but lies outside the box
    assert a.labels[0, 0].item() == 1 and a.scores[0, 0].tolist() == pytest.approx([0.0, 1.0])  # t_hat = max IoU
    a2 = task_aligned_assign(scores, boxes, points, gt_boxes, gt_labels, gt_mask, topk=2)
    assert a2.fg.tolist() == [[True, True, False]]
    # t = s * u^6: anchor 0 = 0.9 * 1, anchor 1 = 0.2 * 0.5^6; normalised by max t and max IoU (1.0)
    assert a2.scores[0, 1, 1].item() == pytest.approx(0.2 * 0.5**6 / 0.9, rel=1e-4)


def test_loss_backward_and_empty_targets():
    model = build_detector("edet_p", 3)
    x = torch.rand(2, 3, 64, 64)
    targets = [
        {"boxes": torch.tensor([[4.0, 4.0, 40.0, 30.0]]), "labels": torch.tensor([2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    terms = detection_loss(model(x), targets, model.strides, model.reg_max)
    terms["total"].backward()
    assert all(torch.isfinite(v) for v in terms.values()) and terms["box"] > 0
    empty = [targets[1], targets[1]]
    terms = detection_loss(model(x), empty, model.strides, model.reg_max)
    assert terms["box"].item() == 0 and torch.isfinite(terms["total"])


def test_nms_reference_and_padding():
    boxes = torch.tensor([[[0.0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]]])
    scores = torch.tensor([[[0.9, 0.8], [0.85, 0.1], [0.3, 0.0005]]])  # [B, A, C]
    sel = nms_indices(boxes, scores.transpose(1, 2), 100, 0.5, 0.001)
    assert sorted(map(tuple, sel.tolist())) == [(0, 0, 0), (0, 0, 2), (0, 1, 0)]  # box 1 suppressed in class 0
    num, det_boxes, det_scores, det_classes = EfficientNMSOutputs(max_det=4, iou_threshold=0.5, score_threshold=0.001)(
        boxes, scores
    )
    assert num.tolist() == [[3]] and num.dtype == det_classes.dtype == torch.int32
    assert det_scores[0].tolist() == pytest.approx([0.9, 0.8, 0.3, 0.0])
    assert det_classes.tolist() == [[0, 1, 0, 0]] and det_boxes[0, 3].tolist() == [0, 0, 0, 0]
    assert nms_indices(boxes, scores.transpose(1, 2), 1, 0.5, 0.001).shape == (2, 3)  # one per class


def test_metrics_ground_truth_scores_one_and_results_json():
    data = load_detection_data("digits-detect", n_train=2, n_val=6)
    preds = [
        {"boxes": b, "scores": torch.ones(len(b)), "labels": lab}
        for b, lab in zip(data.val.boxes, data.val.labels, strict=True)
    ]
    res = coco_map(preds, data.val, data.names, data.category_ids)
    assert res["mAP"] == pytest.approx(1.0) and res["mAP50"] == pytest.approx(1.0)
    present = {data.names[i] for lab in data.val.labels for i in lab.tolist()}
    assert all(res["per_class"][n] == pytest.approx(1.0) for n in present)
    assert all(res["per_class"][n] is None for n in set(data.names) - present)
    row = results_json(preds, data.val, data.category_ids)[0]
    assert set(row) == {"image_id", "file_name", "category_id", "bbox", "score"} and row["file_name"] == "val_00000.png"
    assert (
        coco_map(
            [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0)}] * 6,
            data.val,
            data.names,
            data.category_ids,
        )["mAP"]
        == 0.0
    )


def test_detector_zoo():
    assert set(SIZES) <= set(DETECTOR_NAMES) and "tv:fcos_resnet50_fpn" in DETECTOR_NAMES
    for name in ("edet_p", "edet_n", "edet_s"):
        out = build_detector(name, 4)(torch.rand(1, 3, 64, 64))
        assert [c.shape[1] for c in out["cls"]] == [4, 4, 4] and [r.shape[-1] for r in out["reg"]] == [8, 4, 2]
    fcos = build_detector("tv:fcos_resnet50_fpn", 3, imgsz=64)
    assert fcos.model.head.classification_head.num_classes == 3 and describe(fcos)["family"] == "fcos"
    rcnn = build_detector("tv:fasterrcnn_mobilenet_v3_large_320_fpn", 3, imgsz=64)
    assert rcnn.model.roi_heads.box_predictor.cls_score.out_features == 4  # + background
    dets = rcnn.eval().detect(torch.rand(1, 3, 64, 64), 0.0, 0.5, 10)
    assert set(dets[0]) == {"boxes", "scores", "labels"} and (dets[0]["labels"] < 3).all()
    with pytest.raises(EdgekdError, match="unknown detector"):
        build_detector("yolo", 3)


def _copied_resample_map(preds, split, names, category_ids, drawn) -> float:
    """The slow definition of one bootstrap resample: the drawn images copied under new ids, scored whole."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from edgekd.tasks.detect.metrics import coco_ground_truth

    gt = coco_ground_truth(split, names, category_ids)
    dets = results_json(preds, split, category_ids)
    images, anns, res = [], [], []
    for new, old in enumerate(drawn.tolist(), start=1):
        images.append({**gt["images"][old], "id": new})
        anns += [
            {**a, "id": len(anns) + 1 + k, "image_id": new}
            for k, a in enumerate(a for a in gt["annotations"] if a["image_id"] == old + 1)
        ]
        res += [{**d, "image_id": new} for d in dets if d["image_id"] == old + 1]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": anns, "categories": gt["categories"]}
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(res), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return max(0.0, float(ev.stats[0]))


def test_bootstrap_map_resamples_equal_scoring_copied_images():
    import numpy as np

    from edgekd.tasks.detect.metrics import bootstrap_map

    data = load_detection_data("digits-detect", n_train=2, n_val=12)
    g = torch.Generator().manual_seed(0)
    preds = []
    for b, lab in zip(data.val.boxes, data.val.labels, strict=True):  # jittered boxes, one false positive each
        boxes = torch.cat([b + torch.randn(b.shape, generator=g) * 2.0, torch.tensor([[1.0, 1.0, 9.0, 9.0]])])
        preds.append(
            {"boxes": boxes, "scores": torch.rand(len(boxes), generator=g), "labels": torch.cat([lab, lab[:1]])}
        )
    ci = bootstrap_map(preds, data.val, data.names, data.category_ids, resamples=3, seed=7)
    rng = np.random.default_rng(7)
    for value in ci["values"]:
        drawn = rng.integers(0, len(data.val), size=len(data.val))
        assert value == pytest.approx(_copied_resample_map(preds, data.val, data.names, data.category_ids, drawn))
    point = coco_map(preds, data.val, data.names, data.category_ids)["mAP"]
    assert 0.0 < point < 1.0 and ci["low"] <= ci["high"] and len(set(ci["values"])) > 1
