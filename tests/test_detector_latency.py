"""The detector latency model: fusion rules per runtime, interpolation across the profile grid, the
fitted NMS term, and estimate_detector_latency on a tiny edge detector with NMS in its graph."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.targets.detector_latency import estimate_detector_latency, part_of
from edgekd.targets.graph_cost import layers_from_onnx, torch_to_onnx
from edgekd.targets.grid import interpolate_conv, parse_conv_key
from edgekd.targets.lut import KindFit, LatencyTable, PrecisionTable
from edgekd.targets.nms_cost import fit_nms
from edgekd.tasks.detect.export import export_detector_onnx
from edgekd.tasks.detect.models import build_detector


# ---- fusion rules ---------------------------------------------------------------------------------
class SiLUConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return nn.functional.silu(self.conv(x))


class SEBlock(nn.Module):
    """conv + hardswish, then squeeze-excitation (pool, 1x1 + relu, 1x1 + hardsigmoid, gate multiply)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(16, 16, 3, padding=1)
        self.fc1, self.fc2 = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)

    def forward(self, x):
        y = nn.functional.hardswish(self.conv(x))
        g = nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(y.mean((2, 3), keepdim=True)))))
        return y * g


class Residuals(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        y = torch.relu(self.a(x) + x)  # Conv + Add + ReLU: one NCHWc kernel in ONNX Runtime
        return torch.relu(self.b(y)) + y  # Conv + ReLU, then an Add of its own


def _ops(model: nn.Module, shape, runtime: str) -> list[tuple[str, tuple[str, ...]]]:
    return [(layer.op, tuple(layer.fused)) for layer in layers_from_onnx(torch_to_onnx(model, shape), runtime=runtime)]


def test_silu_is_its_own_kernel_in_onnxruntime_but_fused_in_tensorrt() -> None:
    assert _ops(SiLUConv(), (8, 8, 8), "onnxruntime") == [("Conv", ()), ("SiLU", ("Mul",))]
    assert _ops(SiLUConv(), (8, 8, 8), "tensorrt") == [("Conv", ("Sigmoid", "Mul"))]


def test_squeeze_excitation_gate_is_a_separate_broadcast_multiply_in_onnxruntime() -> None:
    ops = _ops(SEBlock(), (16, 8, 8), "onnxruntime")
    assert ops[0] == ("Conv", ("HardSwish",))
    assert ("Conv", ("Relu",)) in ops and ("Conv", ("HardSigmoid",)) in ops
    assert ops[-1] == ("MulBcast", ())
    # TensorRT's pointwise fusion folds the gate multiply into the kernel that made the gate
    assert all(op != "MulBcast" for op, _ in _ops(SEBlock(), (16, 8, 8), "tensorrt"))


def test_residual_add_fuses_into_a_conv_only_before_its_activation() -> None:
    ops = _ops(Residuals(), (8, 8, 8), "onnxruntime")
    assert ops == [("Conv", ("Add", "Relu")), ("Conv", ("Relu",)), ("Add", ())]
    assert _ops(Residuals(), (8, 8, 8), "tensorrt") == [("Conv", ("Add", "Relu")), ("Conv", ("Relu", "Add"))]


# ---- interpolation ----------------------------------------------------------------------------------
def _key(c: int, hw: int, o: int, k: int = 3, s: int = 1, kind: str = "dwconv") -> str:
    g = c if kind == "dwconv" else 1
    return f"{kind}:n1:c{c}:hw{hw}x{hw}:o{o}:k{k}x{k}:s{s}x{s}:g{g}"


def test_conv_key_round_trips() -> None:
    parsed = parse_conv_key(_key(96, 28, 96, k=5, s=2))
    assert parsed == {"kind": "dwconv", "n": 1, "c": 96, "hw": 28.0, "o": 96, "k": 5, "s": 2, "g": 96}
    assert parse_conv_key("eltwise:Add:1x8x4x4") is None


def test_interpolation_follows_nearby_points_and_fades_to_the_fit_far_away() -> None:
    near = [(parse_conv_key(_key(c, hw, c)), 2.0, 1.0) for c in (64, 128) for hw in (14, 28)]  # measured 2x the fit
    est = interpolate_conv(_key(96, 20, 96), 1.0, near)
    assert 1.6 < est < 2.0
    far = [(parse_conv_key(_key(960, 160, 960)), 2.0, 1.0)]  # one point 10x away in every dimension
    assert 1.0 <= interpolate_conv(_key(16, 10, 16), 1.0, far) < 1.1
    # the kernel size is discrete: a 5x5 query uses the 5x5 points only
    mixed = [(parse_conv_key(_key(96, 20, 96, k=3)), 4.0, 1.0), (parse_conv_key(_key(96, 20, 96, k=5)), 0.5, 1.0)]
    assert interpolate_conv(_key(96, 20, 96, k=5), 1.0, mixed) < 1.0 < interpolate_conv(_key(96, 20, 96), 1.0, mixed)
    assert interpolate_conv("eltwise:Add:1x8x4x4", 1.0, near) is None
    assert interpolate_conv(_key(96, 20, 96, kind="conv"), 1.0, near) is None  # nothing of its kind measured


# ---- the NMS term -------------------------------------------------------------------------------------
def test_nms_fit_recovers_a_superlinear_cost() -> None:
    truth = [(n, 0.01 + 40.0 * (n / 1e6) ** 1.3) for n in (500, 2000, 6000, 20000, 80000)]
    fit = fit_nms(truth)
    assert fit.exponent == pytest.approx(1.3, abs=0.051)
    for n, ms in truth:
        assert fit.predict(0.0, n) == pytest.approx(ms, rel=0.05)
    with pytest.raises(ValueError, match="two"):
        fit_nms(truth[:1])


# ---- estimate_detector_latency ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_detectors(tmp_path_factory) -> dict[int, Path]:
    torch.manual_seed(0)
    model = build_detector("edet_p", 3).eval()
    folder = tmp_path_factory.mktemp("det")
    return {
        s: export_detector_onnx(model, folder / f"edet_p_{s}.onnx", imgsz=s, dynamic_batch=False) for s in (64, 128)
    }


def test_detector_estimate_is_positive_and_grows_with_the_input(tiny_detectors) -> None:
    small = estimate_detector_latency(tiny_detectors[64], "x86-cpu", lut=None)
    big = estimate_detector_latency(tiny_detectors[128], "x86-cpu", lut=None)
    assert 0 < small.ms < big.ms and small.source == "roofline"
    anchors = sum((64 // s) ** 2 for s in (8, 16, 32))
    assert small.nms_candidates == anchors * 3  # untrained head: every anchor x class passes 0.001
    assert small.parts["backbone"] > 0 and small.parts["neck"] > 0 and small.parts["head"] > 0
    assert sum(small.parts.values()) + small.estimate.run_overhead_ms == pytest.approx(small.ms)
    assert any("NMS priced by the roofline" in n for n in small.notes)
    # Jetson (TensorRT rules, datasheet roofline): faster in INT8 than FP16
    fp16 = estimate_detector_latency(tiny_detectors[128], "jetson-orin-nano", precision="fp16", lut=None)
    int8 = estimate_detector_latency(tiny_detectors[128], "jetson-orin-nano", precision="int8", lut=None)
    assert 0 < int8.ms < fp16.ms


def test_detector_estimate_takes_the_nms_term_from_the_table(tiny_detectors) -> None:
    fits = {k: KindFit(0.001, 0.0, 0.0, 3, 0.0) for k in ("conv", "conv1x1", "pool", "eltwise", "data")}
    fits["nms"] = KindFit(0.002, 0.0, 40.0, 5, 0.0, exponent=1.3)
    table = LatencyTable("x86-cpu", "onnxruntime", {}, "now", "test", {"fp32": PrecisionTable(fits=fits)})
    est = estimate_detector_latency(tiny_detectors[64], "x86-cpu", lut=table)
    candidates = est.nms_candidates
    assert est.parts["nms"] == pytest.approx(0.002 + 40.0 * (candidates / 1e6) ** 1.3)
    assert est.source == "lut" and not any("NMS priced by the roofline" in n for n in est.notes)


def test_detector_estimate_errors_are_one_line(tiny_detectors) -> None:
    with pytest.raises(EdgekdError, match="imgsz"):
        estimate_detector_latency(SiLUConv(), "x86-cpu")
    with pytest.raises(EdgekdError, match="precision"):
        estimate_detector_latency(tiny_detectors[64], "x86-cpu", precision="fp8")


def test_parts_follow_the_exporter_names() -> None:
    assert part_of("/model/backbone/stem/stem.0/Conv", "conv") == "backbone"
    assert part_of("/model/model/backbone/fpn/inner_blocks.0/Conv", "conv1x1") == "neck"
    assert part_of("/model/neck/td4/main/main.0/Conv", "conv1x1") == "neck"
    assert part_of("/model/head/cls.0/cls.0.2/Conv", "conv1x1") == "head"
    assert part_of("/model/model/roi_heads/box_head/fc6/Gemm", "gemm") == "head"
    assert part_of("/nms/Sigmoid", "eltwise") == "post"
    assert part_of("anything", "nms") == "nms"
    assert math.isfinite(len(part_of("", "data")))


def test_a_pytorch_edge_detector_is_exported_and_priced() -> None:
    from edgekd.tasks.detect.latency import detector_latency

    est = detector_latency(build_detector("edet_p", 3).eval(), "x86-cpu", imgsz=64, lut=None)
    assert est.ms > 0 and est.nms_candidates == sum((64 // s) ** 2 for s in (8, 16, 32)) * 3
