"""INT8 quantization: calibrators, BN folding, fake-quant grids, Q/DQ placement, the two ONNX flavours,
the TensorRT rules checker, parity with ONNX Runtime, mixed precision and the INT8 checkpoint."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from edgekd.data import BatchIterator, compute_normalization, load_data
from edgekd.distill.trainer import evaluate
from edgekd.export.int8_onnx import export_fp32_folded, export_int8
from edgekd.export.trt_rules import check_trt_rules
from edgekd.models import create_model
from edgekd.models.checkpoint import load_model_file
from edgekd.quant import fold_batchnorm, prepare_int8
from edgekd.quant.calibrate import Collector, compute_amax
from edgekd.quant.checkpoint import load_int8, save_int8
from edgekd.quant.fakequant import ActQuant, QuantWeighted, fake_quant_weight
from edgekd.quant.sensitivity import layer_sensitivity, mixed_precision
from edgekd.runtimes.onnxruntime.infer import run_onnx


def _ort(path, x: np.ndarray) -> np.ndarray:
    return run_onnx(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]), x)


@pytest.fixture(scope="module")
def digits():
    data = load_data("digits", seed=0)
    return data, compute_normalization(data.train)


@pytest.fixture(scope="module")
def calibrated(digits_teacher, digits):
    """The real digits teacher, folded, with fake quantizers calibrated (max) on 256 training images."""
    data, norm = digits
    model = load_model_file(digits_teacher).model.eval()
    qm = prepare_int8(model)
    it = BatchIterator(data.train, 64, shuffle=True, seed=0, normalization=norm)
    batches = [x for _, (x, _y) in zip(range(4), it, strict=False)]
    qm.calibrate(batches, "max")
    return model, qm


@pytest.fixture(scope="module")
def exported(calibrated, tmp_path_factory):
    _, qm = calibrated
    out = tmp_path_factory.mktemp("int8")
    info = export_int8(qm, out / "model_int8.onnx", out / "model_int8_cpu.onnx", input_shape=(1, 8, 8))
    return out, info


def test_calibrators_on_a_known_distribution():
    rng = np.random.default_rng(0)
    collector = Collector()
    for _ in range(4):
        collector.update(torch.from_numpy(rng.standard_normal(50_000).astype(np.float32)))
    collector.update(torch.tensor([60.0]))  # one outlier
    assert compute_amax(collector, "max") == pytest.approx(60.0)
    p = compute_amax(collector, "percentile", 99.0)
    assert 2.3 < p < 2.8  # 99th percentile of |N(0, 1)| is 2.576
    assert 1.5 < compute_amax(collector, "entropy") < 10.0  # KL clips the outlier instead of wasting the grid
    relu = Collector()  # half the values exactly 0, as after a ReLU: the grid must still cover the tail
    relu.update(torch.relu(torch.from_numpy(rng.standard_normal(200_000).astype(np.float32))))
    assert 1.5 < compute_amax(relu, "entropy") <= relu.max
    plain = Collector()
    plain.update(torch.from_numpy(rng.standard_normal(200_000).astype(np.float32)))
    assert 2.0 < compute_amax(plain, "mse") < 0.95 * plain.max  # MSE trades a little clipping for resolution
    with pytest.raises(ValueError, match="unknown calibrator"):
        compute_amax(collector, "minmax")


def test_bn_folding_keeps_the_function_and_removes_batchnorm():
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=10).train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 3, 32, 32) * 2 + 0.5)  # non-trivial running statistics
    model.eval()
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("method", ["percentile", "entropy", "mse"])
def test_relu_outputs_keep_their_observed_max_under_every_calibrator(calibrated, digits, method):
    """The CPU flavour's uint8 grid after a ReLU saturates at 255 steps, so no calibrator may clip a
    ReLU output below its max (fake quant and TensorRT would clip what the CPU flavour keeps)."""
    model, by_max = calibrated
    data, norm = digits
    it = BatchIterator(data.train, 64, shuffle=True, seed=0, normalization=norm)
    batches = [x for _, (x, _y) in zip(range(4), it, strict=False)]
    qm = prepare_int8(model)
    qm.calibrate(batches, method)
    points, reference = qm.points, by_max.points
    relu = [n for n, p in points.items() if p.non_negative]
    signed = [n for n, p in points.items() if not p.non_negative]
    assert relu and signed
    for n in relu:
        assert float(points[n].amax) == pytest.approx(float(reference[n].amax))
    assert any(float(points[n].amax) < float(reference[n].amax) for n in signed)  # the others do clip


def test_the_quantized_copy_of_a_frozen_model_trains():
    """The trainer freezes the model that teaches; its quantized copy must still learn (QAT)."""
    model = create_model("resnet8", num_classes=10).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    qm = prepare_int8(model)
    assert all(p.requires_grad for p in qm.parameters())
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("arch", ["resnet8", "mobilenetv2", "cnn_small"])
def test_feature_taps_of_the_quantized_model_are_the_fp32_stages(arch):
    """Feature KD during QAT reads each stage of the quantized model where the FP32 model's stage
    ends: same shapes, and after calibration on the batch the same values up to INT8 rounding (a
    MobileNetV2's last module at a resolution is an expansion conv, not the block output)."""
    from edgekd.config import TapsConfig
    from edgekd.distill.taps import TapCollector
    from edgekd.quant.qat import qat_taps

    torch.manual_seed(0)
    channels = 1 if arch == "cnn_small" else 3
    model = create_model(arch, num_classes=10, in_channels=channels)
    x = torch.randn(16, channels, *((8, 8) if arch == "cnn_small" else (32, 32)))
    with torch.no_grad():  # BatchNorm statistics of the data, as a trained model has
        model.train()(x)
    model.eval()
    qm = prepare_int8(model)
    qm.calibrate([x], "max")
    taps = qat_taps(qm, model, TapsConfig(), x[:2], "student")
    fp32 = TapCollector(model, {"stages"}, None, x[:2]).probe(x)["stages"]
    quant = TapCollector(qm, {"stages"}, taps, x[:2], label="student").probe(x)["stages"]
    assert len(quant) == len(fp32) >= 3
    for q, f in zip(quant, fp32, strict=True):
        assert q.shape == f.shape
        assert float((q - f).norm() / f.norm()) < 0.1


def test_fake_quant_grids():
    q = ActQuant("a")
    q.amax.fill_(1.27)
    x = torch.linspace(-3, 3, 1001)
    y = q(x)
    steps = y / 0.01
    assert torch.allclose(steps, steps.round(), atol=1e-3)
    assert y.min() == pytest.approx(-1.28) and y.max() == pytest.approx(1.27)  # int8 range [-128, 127]
    w = torch.randn(4, 3, 3, 3)
    wq = fake_quant_weight(w)
    scale = w.abs().flatten(1).amax(1) / 127
    k = wq / scale.view(-1, 1, 1, 1)
    assert torch.allclose(k, k.round(), atol=1e-3) and k.abs().max() <= 127.001
    assert torch.allclose(wq.abs().flatten(1).amax(1), w.abs().flatten(1).amax(1))  # per-channel max kept


def test_quantizers_sit_where_the_qdq_go(calibrated):
    _, qm = calibrated
    gm = qm.gm
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), QuantWeighted):
            producer = node.args[0]
            assert producer.op == "call_module" and isinstance(gm.get_submodule(producer.target), ActQuant), node
    layers = set(qm.layers)
    fed = {layer for users in qm.consumers.values() for layer in users}
    assert fed == layers
    assert any(p.non_negative for p in qm.points.values()) and not qm.points["act:x"].non_negative


def test_tensorrt_flavour_follows_the_rules(exported, calibrated):
    out, info = exported
    _, qm = calibrated
    result = check_trt_rules(out / "model_int8.onnx")
    assert result["passed"], result["violations"]
    assert result["quantized_layers"] == len(qm.layers) == info["quantized_layers"]
    model = onnx.load(str(out / "model_int8.onnx"))
    assert not {"Abs", "ReduceMax"} & {n.op_type for n in model.graph.node}  # no scale computed at run time


def test_checker_catches_broken_models(exported, tmp_path):
    out, _ = exported
    # the CPU flavour (uint8 zero points, int32 biases) is not a TensorRT model
    cpu = check_trt_rules(out / "model_int8_cpu.onnx")
    assert not cpu["passed"] and any("zero point" in v for v in cpu["violations"])
    model = onnx.load(str(out / "model_int8.onnx"))
    zp = next(i for i in model.graph.initializer if i.name.endswith("_zero_point") and len(i.dims) == 1)
    zp.CopyFrom(numpy_helper.from_array(np.full(tuple(zp.dims), 3, np.int8), zp.name))
    assert any("not 0" in v for v in check_trt_rules(model)["violations"])
    model = onnx.load(str(out / "model_int8.onnx"))
    final = next(n for n in model.graph.node if n.output[0] == model.graph.output[0].name)
    q_in = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
    final.output[0] = "pre_output"
    model.graph.node.extend(
        [
            onnx.helper.make_node("QuantizeLinear", ["pre_output", q_in.input[1], q_in.input[2]], ["q_out"]),
            onnx.helper.make_node("DequantizeLinear", ["q_out", q_in.input[1], q_in.input[2]], [final.output[0]]),
        ]
    )
    model.graph.node[-1].output[0] = model.graph.output[0].name
    assert any("graph output" in v for v in check_trt_rules(model)["violations"])


def test_cpu_flavour_zero_points(exported):
    out, info = exported
    model = onnx.load(str(out / "model_int8_cpu.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    qs = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert qs and info["cpu_zero_point_0"] > 0
    for q in qs:
        zp = inits[q.input[2]]
        assert zp.dtype == np.uint8
        producer = producers.get(q.input[0])
        assert int(zp) == (0 if producer is not None and producer.op_type == "Relu" else 128)
    for n in model.graph.node:  # quantized Conv/Gemm biases are int32 for ONNX Runtime's QLinearConv
        if n.op_type in ("Conv", "Gemm") and len(n.input) > 2:
            assert producers[n.input[2]].op_type == "DequantizeLinear"
            assert inits[producers[n.input[2]].input[0]].dtype == np.int32


def test_biases_sit_on_the_int32_grid_of_the_integer_kernels(exported, calibrated):
    """The fake-quant model adds each bias on the grid s_in * s_w; both exported flavours carry exactly
    those values (the CPU flavour as int32 behind a DequantizeLinear, the TensorRT one as floats)."""
    out, _ = exported
    _, qm = calibrated
    snapped = {}
    before = {name: q.layer.bias.detach().clone() for name, q in qm.layers.items()}
    with qm.biases_on_grid():
        for name, q in qm.layers.items():
            s_b = q.bias_scale()
            assert s_b is not None and s_b.shape == q.layer.bias.shape
            ratio = q.layer.bias.detach() / s_b
            assert torch.allclose(ratio, ratio.round(), atol=1e-3)
            snapped[name] = q.layer.bias.detach().clone().numpy()
    assert all(torch.equal(before[name], q.layer.bias) for name, q in qm.layers.items())  # restored
    cpu = onnx.load(str(out / "model_int8_cpu.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in cpu.graph.initializer}
    producers = {o: n for n in cpu.graph.node for o in n.output}
    dequantized = []
    for n in cpu.graph.node:
        if n.op_type in ("Conv", "Gemm") and len(n.input) > 2:
            dq = producers[n.input[2]]
            dequantized.append(inits[dq.input[0]].astype(np.float64) * inits[dq.input[1]].astype(np.float64))
    assert len(dequantized) == len(snapped)
    for b in dequantized:  # each int32 bias is one of the fake-quant model's biases, to float32 precision
        assert any(v.shape == b.shape and np.allclose(v, b, rtol=1e-5, atol=1e-7) for v in snapped.values())


def test_parity_fake_quant_vs_both_flavours(exported, calibrated, digits):
    out, _ = exported
    _, qm = calibrated
    data, norm = digits
    x = torch.cat([b for b, _ in BatchIterator(data.val, 256, shuffle=False, seed=0, normalization=norm)])
    with torch.no_grad():
        ref = qm.eval()(x).numpy()
    cpu, trt = _ort(out / "model_int8_cpu.onnx", x.numpy()), _ort(out / "model_int8.onnx", x.numpy())
    agree = lambda a, b: float(np.mean(a.argmax(1) == b.argmax(1)))  # noqa: E731
    assert agree(ref, cpu) >= 0.99 and agree(ref, trt) >= 0.99
    assert agree(cpu, trt) >= 0.995
    assert np.abs(cpu - ref).mean() < 0.05 * np.abs(ref).mean()


def test_fp32_folded_export_matches_the_model(calibrated, tmp_path):
    model, qm = calibrated
    path = export_fp32_folded(qm, tmp_path / "fp32.onnx", input_shape=(1, 8, 8))
    assert all(p.enabled for p in qm.points.values())  # the quantizers are back on afterwards
    assert not any(n.op_type in ("QuantizeLinear", "BatchNormalization") for n in onnx.load(str(path)).graph.node)
    x = torch.randn(8, 1, 8, 8)
    with torch.no_grad():
        np.testing.assert_allclose(_ort(path, x.numpy()), model(x).numpy(), atol=1e-4, rtol=1e-4)


def test_mixed_precision_layer_stays_float_in_the_export(calibrated, digits, tmp_path):
    _, qm = calibrated
    first = next(iter(qm.layers))
    qm.set_skipped([first])
    try:
        info = export_int8(qm, tmp_path / "m.onnx", tmp_path / "cpu.onnx", input_shape=(1, 8, 8))
        result = check_trt_rules(tmp_path / "m.onnx")
        assert result["passed"] and len(result["float_layers"]) == 1
        assert result["quantized_layers"] == len(qm.layers) - 1
        assert not qm.points["act:x"].enabled  # the input feeds only the float layer: no Q/DQ there
        # FP16 fallback lives in the TensorRT flavour (strongly typed builds read it from the types)
        model = onnx.load(str(tmp_path / "m.onnx"))
        inits = {i.name: i for i in model.graph.initializer}
        (layer,) = [n for n in model.graph.node if n.name in info["fp16_layers"]]
        assert inits[layer.input[1]].data_type == onnx.TensorProto.FLOAT16
        casts = [n for n in model.graph.node if n.op_type == "Cast"]
        assert [a.i for n in casts for a in n.attribute] == [onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT]
        assert not any(n.op_type == "Cast" for n in onnx.load(str(tmp_path / "cpu.onnx")).graph.node)
        data, norm = digits
        x = torch.cat([b for b, _ in BatchIterator(data.val, 256, shuffle=False, seed=0, normalization=norm)])
        with torch.no_grad():
            ref = qm.eval()(x).numpy()
        trt = _ort(tmp_path / "m.onnx", x.numpy())  # ONNX Runtime runs the FP16 layer on the CPU
        assert float(np.mean(ref.argmax(1) == trt.argmax(1))) >= 0.99
        export_int8(qm, tmp_path / "m32.onnx", None, input_shape=(1, 8, 8), fp16_fallback=False)
        assert not any(n.op_type == "Cast" for n in onnx.load(str(tmp_path / "m32.onnx")).graph.node)
    finally:
        qm.set_skipped([])


def test_sensitivity_and_mixed_precision(calibrated, digits):
    _, qm = calibrated
    data, norm = digits
    device = torch.device("cpu")
    score = lambda: evaluate(qm, data.val, norm, device)["top1"]  # noqa: E731
    sens = layer_sensitivity(qm, score)
    assert list(sens["layers"]) and set(sens["layers"]) == set(qm.layers)
    drops = list(sens["layers"].values())
    assert drops == sorted(drops, reverse=True)
    assert all(q.enabled for q in qm.layers.values())  # restored
    easy = mixed_precision(qm, score, fp32=sens["fp32"], order=list(sens["layers"]), max_drop=1)
    assert easy["skipped"] == [] and easy["within_max_drop"]
    strict = mixed_precision(qm, score, fp32=sens["fp32"] + 1, order=list(sens["layers"]), max_drop=0.0)
    assert strict["skipped"] == list(sens["layers"]) and not strict["within_max_drop"]
    qm.set_skipped([])


def test_int8_checkpoint_round_trip(calibrated, digits, tmp_path):
    model, qm = calibrated
    data, norm = digits
    path = save_int8(
        tmp_path / "s.pt",
        qm,
        arch=model.arch_spec,
        input_spec={"shape": [1, 8, 8], "mean": norm.mean, "std": norm.std},
        classes=data.classes,
    )
    loaded, meta = load_int8(path)
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), qm.eval()(x))
    assert meta["format"] == "edgekd.int8/1"
    top1 = evaluate(loaded, data.val, norm, torch.device("cpu"))["top1"]
    assert top1 > 0.8  # a real digits teacher, quantized, still classifies
