"""The CPU flavour's INT8 encoding (issue 15): U8S8 saturates on x86 without VNNI, and the encoding
chosen for such a CPU does not. Shown three ways, so it is tested on any development machine:

- NumPy: ``vpmaddubsw_dot`` emulates the AVX2 kernel's int16-saturating pair sums;
- the real exported model: its weights bound any pair, and the U8U8 file computes the same as U8S8;
- QEMU's Haswell model (AVX2, no AVX-512, no VNNI) running the real ONNX Runtime, when
  ``qemu-x86_64`` is installed (skipped with the reason otherwise).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from edgekd.data import BatchIterator, compute_normalization, load_data
from edgekd.export.int8_onnx import export_int8
from edgekd.host import isa_from_flags
from edgekd.models.checkpoint import load_model_file
from edgekd.quant import prepare_int8
from edgekd.runtimes.onnxruntime.infer import run_onnx
from edgekd.runtimes.onnxruntime.int8_encoding import (
    INT16_MAX,
    apply_encoding,
    choose_encoding,
    exact_on_host,
    model_encoding,
    u8s8_exact,
    u8s8_pair_bound,
    vpmaddubsw_dot,
    weights_to_uint8,
)
from edgekd.targets import load_target


def _ort(model: onnx.ModelProto | Path, x: np.ndarray) -> np.ndarray:
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    return run_onnx(ort.InferenceSession(source, providers=["CPUExecutionProvider"]), x)


@pytest.mark.parametrize(
    ("flags", "machine", "isa"),
    [
        ({"avx2", "avx512f", "avx512bw", "avx512_vnni"}, "x86_64", "x86-64-vnni"),
        ({"avx2", "avx_vnni"}, "x86_64", "x86-64-vnni"),
        ({"avx2", "avx512f", "avx512bw"}, "x86_64", "x86-64-avx512"),
        ({"avx2", "fma"}, "x86_64", "x86-64-avx2"),
        ({"sse4_2"}, "x86_64", "x86-64"),
        ({"asimd", "asimddp"}, "aarch64", "arm64"),
        (set(), "riscv64", "unknown"),
    ],
)
def test_instruction_set_from_cpu_flags(flags, machine, isa):
    assert isa_from_flags(frozenset(flags), machine) == isa


def test_encoding_per_instruction_set():
    eight_bit, seven_bit = 2 * 127 * 255, 2 * 63 * 255
    assert seven_bit <= INT16_MAX < eight_bit
    chosen = {isa: choose_encoding(isa, eight_bit, isa_source="test").name for isa in ("x86-64-vnni", "arm64")}
    assert chosen == {"x86-64-vnni": "u8s8", "arm64": "u8s8"}
    for isa in ("x86-64-avx2", "x86-64-avx512", "x86-64"):
        without = choose_encoding(isa, eight_bit, isa_source="test")
        assert without.name == "u8u8" and "saturat" in without.reason and "weight_bits=7" in without.reason
        assert choose_encoding(isa, seven_bit, isa_source="test").name == "u8s8"  # 7-bit weights: exact
    assert choose_encoding("unknown", seven_bit, isa_source="test").name == "u8u8"


def test_vpmaddubsw_emulation_saturates_u8s8_with_zero_point_128():
    """Activations on zero point 128 (int8 value v stored as v + 128) against large int8 weights: the
    AVX2 pair sums clip, the exact int32 dot product does not; shifting the weights to uint8 (U8U8,
    which MLAS widens to int16 before multiplying) gives the exact result."""
    rng = np.random.default_rng(0)
    v = rng.integers(-128, 128, size=(64, 288))  # int8 activations, 288 = 32 channels x 3 x 3
    w = rng.integers(-127, 128, size=(288, 16))  # int8 weights
    a_u8 = (v + 128).astype(np.uint8)
    exact = a_u8.astype(np.int64) @ w  # what VNNI / ARM / U8U8 compute (before the zero-point terms)
    avx2 = vpmaddubsw_dot(a_u8, w.astype(np.int8))
    assert np.any(avx2 != exact)  # saturation happened
    saturated = np.abs(a_u8[:, 0::2, None].astype(np.int64) * w[None, 0::2] + a_u8[:, 1::2, None] * w[None, 1::2])
    assert saturated.max() > INT16_MAX
    # the same grid with weights as uint8 (zero point 128): exact integer arithmetic, same real values
    w_u8 = (w + 128).astype(np.int64)
    u8u8 = a_u8.astype(np.int64) @ w_u8 - 128 * a_u8.astype(np.int64).sum(1, keepdims=True)
    assert np.array_equal(u8u8, exact)
    # 7-bit weights keep every pair within int16: the AVX2 kernel is exact
    w7 = np.clip(w // 2, -63, 63)
    assert np.array_equal(vpmaddubsw_dot(a_u8, w7.astype(np.int8)), a_u8.astype(np.int64) @ w7)


@pytest.fixture(scope="module")
def calibrated(digits_teacher):
    data = load_data("digits", seed=0)
    norm = compute_normalization(data.train)
    qm = prepare_int8(load_model_file(digits_teacher).model.eval())
    it = BatchIterator(data.train, 64, shuffle=True, seed=0, normalization=norm)
    qm.calibrate([x for _, (x, _y) in zip(range(4), it, strict=False)], "max")
    x = torch.cat([b for b, _ in BatchIterator(data.val, 256, shuffle=False, seed=0, normalization=norm)])
    return qm, x


def test_export_chooses_by_instruction_set_and_u8u8_is_the_same_grid(calibrated, tmp_path):
    qm, x = calibrated
    infos = {}
    for isa in ("x86-64-vnni", "x86-64-avx2"):
        infos[isa] = export_int8(
            qm, tmp_path / f"{isa}.onnx", tmp_path / f"{isa}_cpu.onnx", input_shape=(1, 8, 8), cpu_isa=(isa, "test")
        )
    assert infos["x86-64-vnni"]["cpu_encoding"]["name"] == "u8s8"
    avx2 = infos["x86-64-avx2"]["cpu_encoding"]
    assert avx2["name"] == "u8u8" and avx2["pair_bound"] > INT16_MAX and avx2["isa_source"] == "test"
    u8s8, u8u8 = (onnx.load(str(tmp_path / f"{isa}_cpu.onnx")) for isa in ("x86-64-vnni", "x86-64-avx2"))
    assert (model_encoding(u8s8), model_encoding(u8u8)) == ("u8s8", "u8u8")
    weights = [numpy_helper.to_array(i) for i in u8u8.graph.initializer if i.name.endswith("_int8") and i.dims]
    assert weights and all(w.dtype == np.uint8 for w in weights)
    # on this host both run exactly (U8U8 everywhere; U8S8 re-encoded here if this CPU lacks VNNI)
    a = _ort(exact_on_host(u8s8), x.numpy())
    b = _ort(u8u8, x.numpy())
    assert np.mean(a.argmax(1) == b.argmax(1)) == 1.0
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_seven_bit_weights_keep_u8s8_exact_on_avx2(calibrated, tmp_path):
    qm, x = calibrated
    with torch.no_grad():
        before = qm(x[:64]).clone()
    qm.set_weight_bits(7)
    try:
        info = export_int8(
            qm, tmp_path / "m.onnx", tmp_path / "m_cpu.onnx", input_shape=(1, 8, 8), cpu_isa=("x86-64-avx2", "test")
        )
        with torch.no_grad():
            after = qm(x[:64])
        assert qm.scale_table()["weight_bits"] == 7
    finally:
        qm.set_weight_bits(8)
    enc = info["cpu_encoding"]
    assert enc["name"] == "u8s8" and enc["pair_bound"] <= 2 * 63 * 255
    assert u8s8_exact("x86-64-avx2", u8s8_pair_bound(onnx.load(str(tmp_path / "m_cpu.onnx"))))
    assert not torch.equal(before, after)  # a coarser weight grid, really in use


def test_profiles_state_which_cpu_runs_the_cpu_flavour():
    assert load_target("arm-cpu").cpu_flavour_isa() == ("arm64", "target profile arm-cpu")
    isa, source = load_target("x86-cpu").cpu_flavour_isa()
    assert source == "this host's CPU (CPUID)" and isa.startswith(("x86-64", "arm64", "unknown"))
    assert load_target("jetson-orin-nano").cpu_flavour_isa()[1] == "this host's CPU (CPUID)"


# ---- the real ONNX Runtime on an emulated AVX2 CPU ----------------------------------------------
_QEMU_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np, onnx, onnxruntime as ort
    from edgekd.runtimes.onnxruntime import int8_encoding as enc  # imports no torch (slow under QEMU)
    assert "torch" not in sys.modules
    u8s8, u8u8 = [onnx.load(p) for p in sys.argv[1:3]]
    x = np.load(sys.argv[3])
    cpu = ["CPUExecutionProvider"]
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=cpu).run(None, {"x": x})[0]
    np.save(sys.argv[4], np.stack([run(u8s8), run(u8u8), run(enc.exact_on_host(u8s8))]))
    print(enc.host_isa())
    """
)


def _conv_model(weights_u8: bool) -> onnx.ModelProto:
    """Q -> DQ -> Conv -> Q -> DQ with activations on zero point 128 and int8 weights near +-127 (or
    the same grid as uint8 + 128): ONNX Runtime fuses it into one QLinearConv."""
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, size=(8, 16, 3, 3)).astype(np.int8)
    wq, wzp = (w, np.zeros(8, np.int8)) if not weights_u8 else ((w.astype(np.int16) + 128).astype(np.uint8), None)
    if wzp is None:
        wzp = np.full(8, 128, np.uint8)
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "xs"),
        numpy_helper.from_array(np.array(128, np.uint8), "zp"),
        numpy_helper.from_array(np.array(2.0, np.float32), "ys"),
        numpy_helper.from_array(wq, "wq"),
        numpy_helper.from_array(np.full(8, 0.01, np.float32), "ws"),
        numpy_helper.from_array(wzp, "wzp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "zp"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "zp"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wzp"], ["wd"], axis=0),
        helper.make_node("Conv", ["xd", "wd"], ["yc"], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["yc", "ys", "zp"], ["yq"]),
        helper.make_node("DequantizeLinear", ["yq", "ys", "zp"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def test_real_onnx_runtime_on_an_emulated_avx2_cpu(tmp_path):
    """QEMU's Haswell model has AVX2 and neither AVX-512 nor VNNI, so ONNX Runtime picks its VPMADDUBSW
    kernel there: the U8S8 model saturates, the U8U8 re-encoding of the same grid is exact."""
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        pytest.skip("qemu-x86_64 is not installed (Debian: apt-get install qemu-user); the NumPy emulation covers it")
    u8s8 = apply_encoding(_conv_model(weights_u8=False), "u8s8")  # tagged as the export tags it
    u8u8 = weights_to_uint8(u8s8)
    assert model_encoding(u8u8) == "u8u8"
    paths = [tmp_path / "u8s8.onnx", tmp_path / "u8u8.onnx"]
    for model, path in zip((u8s8, u8u8), paths, strict=True):
        onnx.save(model, str(path))
    rng = np.random.default_rng(1)
    x = (rng.integers(-128, 128, size=(1, 16, 8, 8)) * 0.05).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "run.py").write_text(_QEMU_SCRIPT)
    # exact reference: integer conv in float64 on the quantized grid, requantized
    w = numpy_helper.to_array(u8s8.graph.initializer[3]).astype(np.float64) * 0.01
    xq = np.clip(np.round(x / 0.05), -128, 127).astype(np.float64) * 0.05
    ref = torch.nn.functional.conv2d(torch.tensor(xq), torch.tensor(w), padding=1).numpy()
    ref = (np.clip(np.round(ref / 2.0) + 128, 0, 255) - 128) * 2.0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("EDGEKD_HOST_ISA", None)
    cmd = [qemu, "-cpu", "Haswell", sys.executable, str(tmp_path / "run.py"), *map(str, paths)]
    done = subprocess.run(
        [*cmd, str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "x86-64-avx2"  # detected from CPUID, not the host's /proc/cpuinfo
    y_u8s8, y_u8u8, y_host = np.load(tmp_path / "y.npy")
    assert np.abs(y_u8s8 - ref).max() > 2.0  # saturated: several output steps off
    np.testing.assert_array_equal(y_u8u8, ref)  # exact
    np.testing.assert_array_equal(y_host, ref)  # what edgekd runs on that CPU: re-encoded, exact
    # and natively on this host, the model the host runs (re-encoded if needed) is exact too
    np.testing.assert_array_equal(_ort(exact_on_host(u8s8), x), ref)


# ---- the stages around it ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("target", "host", "bits"),
    [
        ("x86-cpu", "x86-64-avx2", 7),
        ("x86-cpu", "x86-64-vnni", 8),
        ("arm-cpu", "x86-64-avx2", 8),
        ("jetson-orin-nano", "x86-64-avx2", 8),
    ],
)
def test_weight_bits_auto_follows_the_cpu_that_runs_the_model(monkeypatch, target, host, bits):
    from edgekd.config import RunConfig
    from edgekd.stages.quantize import resolve_weight_bits

    monkeypatch.setenv("EDGEKD_HOST_ISA", host)
    assert resolve_weight_bits(RunConfig(target=target)) == bits
    fixed = RunConfig(target=target).model_copy(deep=True)
    fixed.quantize.weight_bits = 8
    assert resolve_weight_bits(fixed) == 8


def test_a_failed_int8_parity_names_the_flavour_and_the_setting(tmp_path):
    from edgekd.errors import CheckFailed
    from edgekd.stages.export import _check_int8_parity

    ctx = type("Ctx", (), {"dir": tmp_path})()
    parity = {
        "student_int8_cpu": {
            "top1_agreement": 0.6667,
            "samples": 360,
            "min_agreement": 0.99,
            "passed": False,
            "encoding": "u8s8",
            "host_isa": "x86-64-avx2",
        },
        "student_int8_trt": {"top1_agreement": 1.0, "samples": 360, "min_agreement": 0.99, "passed": True},
    }
    with pytest.raises(CheckFailed) as err:
        _check_int8_parity(ctx, parity)
    message = str(err.value)
    assert "model_int8_cpu.onnx" in message and "u8s8" in message and "x86-64-avx2" in message
    assert "66.67%" in message and "quantize.parity_min_agreement" in message and "\n" not in message


def test_host_isa_override_is_checked(monkeypatch):
    from edgekd.host import host_isa

    monkeypatch.setenv("EDGEKD_HOST_ISA", "x86-64-avx512")
    assert host_isa() == "x86-64-avx512"
    monkeypatch.setenv("EDGEKD_HOST_ISA", "pentium")
    with pytest.raises(ValueError, match="EDGEKD_HOST_ISA"):
        host_isa()


def test_report_says_why_the_run_stopped(tmp_path):
    from edgekd.pipeline import RunDir
    from edgekd.report import build_report

    run = RunDir(tmp_path / "run")
    (run.path / ".export.partial").mkdir(parents=True)
    (run.path / ".export.partial" / "parity.json").write_text("{}")
    run.manifest = {
        "target": "x86-cpu",
        "stages": {"export": {"status": "failed", "error": "INT8 parity: the INT8 ONNX Runtime CPU flavour ..."}},
    }
    text = build_report(run)
    assert "The run stopped at stage export:** INT8 parity" in text and ".export.partial/" in text
    assert "No benchmark yet" not in text
