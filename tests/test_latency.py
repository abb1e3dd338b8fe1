"""The latency model: per-layer work counted by hand, the roofline's monotonicity, tables preferred."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.models import create_model
from edgekd.targets import load_target
from edgekd.targets.graph_cost import layers_from_model
from edgekd.targets.latency import estimate_latency, roofline_figures, roofline_layer_ms
from edgekd.targets.lut import KindFit, LatencyTable, PrecisionTable, load_table


class ConvNet(nn.Module):
    """conv3x3(3->8, stride 1, pad 1)+BN+ReLU on 3x16x16, depthwise 3x3, then global pool and a 8->5 linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = torch.relu(self.dw(x)) + x  # residual add: fused into the depthwise kernel
        return self.fc(x.mean((2, 3)))


@pytest.fixture(scope="module")
def convnet_layers():
    return layers_from_model(ConvNet(), input_shape=(3, 16, 16), batch=1)[0]


def test_flops_of_known_layers(convnet_layers) -> None:
    conv, dw, pool, fc = convnet_layers
    # conv: 2 * (8 * 16 * 16 outputs) * (3 * 3 * 3 MACs each), plus the fused ReLU (one op per output)
    assert conv.kind == "conv" and conv.flops == 2 * 8 * 16 * 16 * 27 + 8 * 16 * 16
    assert conv.fused == ["Relu"]  # BN was folded into the conv at export
    assert conv.act_in == 3 * 16 * 16 and conv.act_out == 8 * 16 * 16
    assert conv.weights == 8 * 3 * 3 * 3 + 8  # weights + the bias BN folding leaves
    # depthwise: 9 MACs per output; Relu and the residual Add fused; the residual is read from memory
    assert dw.kind == "dwconv" and dw.fused == ["Relu", "Add"]
    assert dw.flops == 2 * 8 * 16 * 16 * 9 + 2 * 8 * 16 * 16
    assert dw.act_in == 2 * 8 * 16 * 16
    assert pool.kind == "pool"
    assert fc.kind == "gemm" and fc.flops == 2 * 8 * 5 and fc.weights == 8 * 5 + 5


def test_batch_scales_the_work() -> None:
    one = layers_from_model(ConvNet(), input_shape=(3, 16, 16), batch=1)[0]
    four = layers_from_model(ConvNet(), input_shape=(3, 16, 16), batch=4)[0]
    assert sum(x.flops for x in four) == pytest.approx(4 * sum(x.flops for x in one))
    assert four[0].weights == one[0].weights  # weights are read once per batch


def test_known_model_flops() -> None:
    # resnet20 on CIFAR: 40.55M multiply-adds (He et al. / RepDistiller tables quote ~41M MACs)
    layers, _ = layers_from_model(create_model("resnet20"), input_shape=(3, 32, 32))
    macs = sum(x.flops for x in layers if x.kind.startswith("conv") or x.kind == "gemm") / 2
    assert 40e6 < macs < 41.5e6


def test_roofline_is_monotonic(convnet_layers) -> None:
    profile = load_target("jetson-orin-nano")
    layer = convnet_layers[0]
    figs = roofline_figures(profile, "fp16")
    base, _ = roofline_layer_ms(layer, figs, "fp16")
    more_flops, _ = roofline_layer_ms(dataclasses.replace(layer, flops=layer.flops * 1000), figs, "fp16")
    more_bytes, _ = roofline_layer_ms(dataclasses.replace(layer, act_in=layer.act_in * 1000), figs, "fp16")
    assert more_flops > base and more_bytes > base
    big = create_model("resnet20")
    small = create_model("resnet8")
    for precision in ("fp32", "fp16", "int8"):
        b = estimate_latency(big, profile, input_shape=(3, 32, 32), precision=precision, lut=None)
        s = estimate_latency(small, profile, input_shape=(3, 32, 32), precision=precision, lut=None)
        assert b.ms > s.ms and b.source == "roofline"
    fp32 = estimate_latency(big, profile, input_shape=(3, 32, 32), precision="fp32", lut=None).ms
    fp16 = estimate_latency(big, profile, input_shape=(3, 32, 32), precision="fp16", lut=None).ms
    int8 = estimate_latency(big, profile, input_shape=(3, 32, 32), precision="int8", lut=None).ms
    assert fp32 > fp16 > int8
    b1 = estimate_latency(big, profile, input_shape=(3, 32, 32), precision="fp16", batch=1, lut=None).ms
    b8 = estimate_latency(big, profile, input_shape=(3, 32, 32), precision="fp16", batch=8, lut=None).ms
    assert b8 > b1


def test_faster_target_is_faster() -> None:
    model = create_model("resnet20")
    nano = estimate_latency(model, "jetson-orin-nano", input_shape=(3, 32, 32), precision="int8", lut=None)
    agx = estimate_latency(model, "jetson-agx-orin-64gb", input_shape=(3, 32, 32), precision="int8", lut=None)
    assert agx.ms < nano.ms


def test_estimate_of_an_onnx_file(tmp_path: Path) -> None:
    from edgekd.export.onnx_export import export_onnx

    model = create_model("resnet8")
    path = tmp_path / "m.onnx"
    export_onnx(model, path, input_shape=(3, 32, 32))
    from_file = estimate_latency(path, "t4", precision="int8", lut=None)
    from_module = estimate_latency(model, "t4", input_shape=(3, 32, 32), precision="int8", lut=None)
    assert from_file.ms == pytest.approx(from_module.ms, rel=1e-6)
    assert from_file.to_dict()["per_layer"][0]["source"] == "roofline"
    assert estimate_latency(str(path), "t4", precision="int8", batch=4, lut=None).ms > from_file.ms


def _table(entries: dict[str, float], fits: dict[str, KindFit] | None = None) -> LatencyTable:
    return LatencyTable(
        target="t4",
        runtime="onnxruntime",
        host={},
        created="now",
        grid="test",
        precisions={"fp32": PrecisionTable(entries=entries, fits=fits or {}, run_overhead_ms=0.5)},
    )


def test_lut_is_preferred_where_it_has_an_entry(convnet_layers, tmp_path: Path) -> None:
    model = ConvNet()
    first = convnet_layers[0]
    table = _table({first.key: 7.0})
    est = estimate_latency(model, "t4", input_shape=(3, 16, 16), lut=table)
    assert est.per_layer[0]["ms"] == 7.0 and est.per_layer[0]["source"] == "lut"
    assert {r["source"] for r in est.per_layer[1:]} == {"roofline"}
    assert est.source == "lut+roofline"
    fits = {k: KindFit(0.01, 0.0, 0.0, 3, 0.0) for k in ("conv", "dwconv", "pool", "gemm", "eltwise")}
    full = estimate_latency(model, "t4", input_shape=(3, 16, 16), lut=_table({first.key: 7.0}, fits))
    # an ONNX Runtime table groups by ORT's rules: the Add after the depthwise conv's ReLU is a kernel of its own
    assert full.source == "lut" and full.ms == pytest.approx(7.0 + 4 * 0.01 + 0.5)
    # round trip through a file
    path = tmp_path / "t.json"
    _table({first.key: 7.0}, fits).save(path)
    again = estimate_latency(model, "t4", input_shape=(3, 16, 16), lut=load_table(path))
    assert again.ms == pytest.approx(full.ms)
    # a table of another precision is not used for this one
    assert estimate_latency(model, "t4", input_shape=(3, 16, 16), precision="int8", lut=table).source == "roofline"


def test_auto_table_is_found(convnet_layers, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("EDGEKD_LUT_DIR", str(tmp_path))
    assert estimate_latency(ConvNet(), "t4", input_shape=(3, 16, 16)).source == "roofline"
    _table({convnet_layers[0].key: 7.0}).save(tmp_path / "t4.json")
    assert estimate_latency(ConvNet(), "t4", input_shape=(3, 16, 16)).per_layer[0]["source"] == "lut"


def test_user_errors_are_one_line(tmp_path: Path) -> None:
    cases = [
        lambda: estimate_latency(ConvNet(), "jetson-nano", input_shape=(3, 16, 16), precision="int8"),
        lambda: estimate_latency(ConvNet(), "t4", input_shape=(3, 16, 16), precision="bf16"),
        lambda: estimate_latency(ConvNet(), "t4"),  # no input shape
        lambda: estimate_latency(tmp_path / "missing.onnx", "t4"),
        lambda: estimate_latency(ConvNet(), "t4", input_shape=(3, 16, 16), batch=0),
        lambda: estimate_latency(ConvNet(), "t4", input_shape=(3, 16, 16), lut=tmp_path / "missing.json"),
    ]
    for case in cases:
        with pytest.raises(EdgekdError) as info:
            case()
        assert "\n" not in str(info.value)


def test_model_mode_is_kept() -> None:
    model = create_model("resnet8")
    model.train()
    estimate_latency(model, "t4", input_shape=(3, 32, 32), lut=None)
    assert all(m.training for m in model.modules())


def test_zoo_models_are_traced_once_per_spec(monkeypatch) -> None:
    from edgekd.targets import graph_cost

    calls = []
    real = graph_cost.torch_to_onnx
    monkeypatch.setattr(graph_cost, "torch_to_onnx", lambda *a, **k: calls.append(1) or real(*a, **k))
    spec = {"name": "mobilenetv2", "width_mult": 0.25, "expand_ratio": 2}
    first = estimate_latency(create_model(spec), "t4", input_shape=(3, 32, 32), lut=None)
    again = estimate_latency(create_model(spec), "t4", input_shape=(3, 32, 32), lut=None)
    assert len(calls) == 1 and again.ms == first.ms
    estimate_latency(create_model(spec), "t4", input_shape=(3, 16, 16), lut=None)  # another shape: traced
    assert len(calls) == 2
