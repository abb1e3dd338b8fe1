"""Detection KD: every loss against values worked out by hand or with plain math, masks, refusals, one step."""

from __future__ import annotations

import math

import pytest
import torch

from edgekd.errors import EdgekdError
from edgekd.tasks.detect.data import load_detection_data
from edgekd.tasks.detect.kd import METHODS, Distiller, applicable, applicable_methods, pair_info
from edgekd.tasks.detect.kd.feature import (
    box_mask,
    channel_wise_distillation,
    fine_grained_mask,
    masked_l2,
    pkd,
)
from edgekd.tasks.detect.kd.response import bounded_regression, dense_class_kd, localization_distillation
from edgekd.tasks.detect.models import build_detector
from edgekd.tasks.detect.train import train_detector

torch.set_num_threads(1)


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def softmax(xs: list[float]) -> list[float]:
    e = [math.exp(x) for x in xs]
    return [v / sum(e) for v in e]


def kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))


def test_dense_class_kd_sigmoid_and_softmax_reference():
    s, t, temp = [[0.5, -1.0], [2.0, 1.0]], [[2.0, 0.0], [-1.0, 0.5]], 2.0
    ref_sig, ref_soft = 0.0, 0.0
    for srow, trow in zip(s, t, strict=True):
        for a, b in zip(srow, trow, strict=True):
            p, q = sig(b / temp), sig(a / temp)
            ref_sig += -(p * math.log(q) + (1 - p) * math.log(1 - q))
        ref_soft += kl(softmax([b / temp for b in trow]), softmax([a / temp for a in srow]))
    got_sig = dense_class_kd(torch.tensor(s), torch.tensor(t), temp, "sigmoid")
    got_soft = dense_class_kd(torch.tensor(s), torch.tensor(t), temp, "softmax")
    assert got_sig.item() == pytest.approx(ref_sig / 2 * temp**2, rel=1e-5)
    assert got_soft.item() == pytest.approx(ref_soft / 2 * temp**2, rel=1e-5)


def test_bounded_regression_hand_values():
    # row 1: student error 1 < teacher error 7 -> 0; row 2: student 9 > teacher 1 -> 9; mean 4.5
    s = torch.tensor([[1.0, 1, 1, 1], [3, 0, 0, 0]])
    t = torch.tensor([[0.0, 0, 0, 0], [1, 0, 0, 0]])
    y = torch.tensor([[1.0, 1, 1, 2], [0, 0, 0, 0]])
    assert bounded_regression(s, t, y).item() == pytest.approx(4.5)
    assert bounded_regression(s, t, y, margin=10.0).item() == pytest.approx((1 + 9) / 2)  # margin lets row 1 in


def test_localization_distillation_reference():
    torch.manual_seed(0)
    s, t, bins, temp = torch.randn(3, 4 * 5), torch.randn(3, 4 * 5), 5, 10.0
    ref = 0.0
    for i in range(3):
        for edge in range(4):
            zs = [v / temp for v in s[i, edge * bins : (edge + 1) * bins].tolist()]
            zt = [v / temp for v in t[i, edge * bins : (edge + 1) * bins].tolist()]
            ref += kl(softmax(zt), softmax(zs))
    got = localization_distillation(s, t, bins, temp).item()
    assert got == pytest.approx(ref / 12 * temp**2, rel=1e-4)


def test_masked_l2_and_box_mask_hand_values():
    s, t = torch.zeros(1, 2, 2, 2), torch.ones(1, 2, 2, 2)
    mask = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    assert masked_l2(s, t, mask).item() == pytest.approx(2 / (2 * 1))  # two channels of (0-1)^2, N_p = 1
    m = box_mask([torch.tensor([[0.0, 0.0, 9.0, 9.0]]), torch.zeros(0, 4)], (2, 2), 8)
    assert m.tolist() == [[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]


def test_fine_grained_mask_hand_values():
    # box 32x32 at the origin; stride 8 anchors are 32x32 at centres 4, 12, 20, 28:
    # IoU centre (12|20, 12|20) = 784/1264 = 0.620 (the max), edge-middle 560/1488 = 0.376, corner 400/1648 = 0.243;
    # stride 16 anchors 64x64 at centres 8, 24: 1024/4096 = 0.25. psi 0.5 keeps IoU > 0.310: centre + edge cells.
    m8, m16 = fine_grained_mask([torch.tensor([[0.0, 0.0, 32.0, 32.0]])], [(4, 4), (2, 2)], [8, 16])
    expect = [[0, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1], [0, 1, 1, 0]]
    assert m8[0].tolist() == [[float(v) for v in row] for row in expect]
    assert m16.sum().item() == 0


def test_cwd_reference():
    torch.manual_seed(1)
    s, t, temp = torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2), 2.0
    ref = 0.0
    for b in range(2):
        for c in range(3):
            ref += kl(
                softmax([v / temp for v in t[b, c].flatten().tolist()]),
                softmax([v / temp for v in s[b, c].flatten().tolist()]),
            )
    assert channel_wise_distillation(s, t, temp).item() == pytest.approx(ref * temp**2 / (2 * 3), rel=1e-4)


def test_pkd_reference():
    torch.manual_seed(2)
    s, t = torch.randn(2, 3, 2, 2) * 5 + 1, torch.randn(2, 3, 2, 2) * 0.1 - 3
    ref, n = 0.0, 0
    for c in range(3):
        xs, ys = s[:, c].flatten().tolist(), t[:, c].flatten().tolist()
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        sx = math.sqrt(sum((v - mx) ** 2 for v in xs) / (len(xs) - 1))
        sy = math.sqrt(sum((v - my) ** 2 for v in ys) / (len(ys) - 1))
        for a, b in zip(xs, ys, strict=True):
            ref += ((a - mx) / sx - (b - my) / sy) ** 2
            n += 1
    assert pkd(s, t).item() == pytest.approx(ref / n / 2, rel=1e-4)
    assert pkd(s, s * 3 + 7).item() == pytest.approx(0.0, abs=1e-6)  # invariant to per-channel scale and shift


def test_refusals_name_reason_and_what_applies():
    student = build_detector("edet_p", 10)
    same = build_detector("edet_n", 10)
    assert applicable_methods(pair_info(same, student, 64), 64) == list(METHODS)
    rcnn = build_detector("tv:fasterrcnn_mobilenet_v3_large_320_fpn", 10, imgsz=64)
    msg = applicable("dense_kd", rcnn, student, 64)
    assert msg.startswith("KD method 'dense_kd' cannot distil tv:fasterrcnn_mobilenet_v3_large_320_fpn into edet_p")
    assert "two-stage" in msg and "apply to this pair: mimic, fgfi, cwd, pkd, pseudo_label" in msg
    ssd = build_detector("tv:ssdlite320_mobilenet_v3_large", 10, imgsz=128)  # resizes to 320: strides 6.4, 12.8..
    msg = applicable("cwd", ssd, student, 128)
    assert "none matches the student's [8, 16, 32]" in msg and msg.endswith("apply to this pair: pseudo_label")
    other_classes = build_detector("edet_p", 3)
    assert "3 classes" in applicable("ld", other_classes, student, 64)
    assert "unknown detection KD method" in applicable("nope", same, student, 64)


def test_distiller_all_methods_one_step_and_refusal():
    data = load_detection_data("digits-detect", n_train=4, n_val=2)
    teacher, student = build_detector("edet_p", 10), build_detector("edet_p", 10)
    kd = {name: 1.0 for name in METHODS}
    hist = train_detector(
        student,
        data,
        epochs=1,
        imgsz=64,
        batch_size=4,
        teacher=teacher,
        kd=kd,
        kd_options={"pseudo_label": {"conf": 0.005}},
    )
    terms = hist["epochs"][0]
    assert hist["steps"] == 1 and all(math.isfinite(terms[f"kd_{n}"]) for n in METHODS)
    assert not any(p.requires_grad for p in teacher.parameters())
    distiller = Distiller(build_detector("edet_p", 10), build_detector("edet_p", 10), {"fgfi": 0.01}, imgsz=64)
    assert len(list(distiller.parameters())) == 6  # one 1x1 adapter (weight + bias) per level
    rcnn = build_detector("tv:fasterrcnn_mobilenet_v3_large_320_fpn", 10, imgsz=64)
    with pytest.raises(EdgekdError, match="'ld' cannot distil"):
        train_detector(build_detector("edet_p", 10), data, epochs=1, imgsz=64, teacher=rcnn, kd={"ld": 1.0})


def test_pseudo_labels_from_a_torchvision_teacher():
    data = load_detection_data("digits-detect", n_train=2, n_val=1)
    teacher = build_detector("tv:fasterrcnn_mobilenet_v3_large_320_fpn", 10, imgsz=64)
    student = build_detector("edet_p", 10)
    hist = train_detector(
        student,
        data,
        epochs=1,
        imgsz=64,
        batch_size=2,
        teacher=teacher,
        kd={"pseudo_label": 1.0, "pkd": 1.0},
        kd_options={"pseudo_label": {"conf": 1e-4}},
    )
    assert math.isfinite(hist["epochs"][0]["kd_pseudo_label"]) and math.isfinite(hist["epochs"][0]["kd_pkd"])
