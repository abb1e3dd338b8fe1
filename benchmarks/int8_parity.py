"""Where the INT8 flavours part ways: ONNX Runtime's integer kernels against exact arithmetic, and
1-step differences compounding with depth in a quantized network.

    python benchmarks/int8_parity.py [--arch mobilenetv2] [--images 500]

Part 1 (kernels): one layer at a time (1x1, 3x3 and depthwise convolutions with and without ReLU,
uint8 zero point 128 or 0, int8 per-channel weights, int32 bias; a residual Add), written as
DequantizeLinear -> op -> QuantizeLinear, is run by ONNX Runtime twice: with its optimizations (the
fused integer kernels QLinearConv / QLinearAdd that the cpu flavour gets) and without them (float
arithmetic, as the TensorRT flavour runs on a CPU). Both outputs are compared with the exact
result, computed in float64 and rounded half to even.

Part 2 (depth): the FP32 model that ``benchmarks/quantization.py --train-samples 10000 --epochs 10``
(its earlier budget) trained for ``--arch`` (cached under benchmarks/work/quantization/) is
calibrated as there (entropy, 512 training images), both flavours are exported, and at every
quantization point the integers of the float32 fake-quant model and of each flavour are compared
with those of the same fake-quant model run in float64 (the integer arithmetic without float32
rounding) on ``--images`` test images.

Writes ``benchmarks/results/int8_parity.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import quantization as Q  # noqa: E402

from edgekd.bench import host_description  # noqa: E402
from edgekd.data import compute_normalization, load_data  # noqa: E402
from edgekd.data.splits import take  # noqa: E402
from edgekd.export.int8_onnx import export_int8  # noqa: E402
from edgekd.io import atomic_write_json, atomic_write_text  # noqa: E402
from edgekd.models import create_model  # noqa: E402
from edgekd.quant import prepare_int8  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
LEVELS = {"fused": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "float": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}


def _session(model: onnx.ModelProto, level) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.intra_op_num_threads = 2
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def conv_case(
    rng, cin: int, cout: int, k: int, groups: int, zx: int, relu: bool, stride: int = 1, n: int = 200
) -> dict:
    """One quantized convolution: ONNX Runtime fused and float against the exact float64 result."""
    sx, sy = np.float32(0.031), np.float32(0.047)
    w = rng.integers(-127, 128, (cout, cin // groups, k, k)).astype(np.int8)
    sw = (rng.random(cout) * 0.01 + 0.001).astype(np.float32)
    bias = rng.integers(-2000, 2000, cout).astype(np.int32)
    sb = (sx * sw).astype(np.float32)
    zy = 0 if relu else 128
    inits = [
        _const("sx", sx), _const("zx", np.uint8(zx)), _const("w", w), _const("sw", sw),
        _const("zw", np.zeros(cout, np.int8)), _const("b", bias), _const("sb", sb),
        _const("zb", np.zeros(cout, np.int32)), _const("sy", sy), _const("zy", np.uint8(zy)),
    ]  # fmt: skip
    nodes = [
        helper.make_node("DequantizeLinear", ["x", "sx", "zx"], ["fx"]),
        helper.make_node("DequantizeLinear", ["w", "sw", "zw"], ["fw"], axis=0),
        helper.make_node("DequantizeLinear", ["b", "sb", "zb"], ["fb"], axis=0),
        helper.make_node("Conv", ["fx", "fw", "fb"], ["y"], pads=[k // 2] * 4, group=groups, strides=[stride] * 2),
    ]
    last = "y"
    if relu:
        nodes.append(helper.make_node("Relu", ["y"], ["yr"]))
        last = "yr"
    nodes.append(helper.make_node("QuantizeLinear", [last, "sy", "zy"], ["q"]))
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [None, cin, 8, 8])],
        [helper.make_tensor_value_info("q", TensorProto.UINT8, [None, cout, 8 // stride, 8 // stride])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    x = rng.integers(0, 256 if zx == 128 else 128, (n, cin, 8, 8)).astype(np.uint8)
    xf = torch.tensor((x.astype(np.float64) - zx) * float(sx))
    wf = torch.tensor(w.astype(np.float64) * sw.astype(np.float64)[:, None, None, None])
    bf = torch.tensor(bias.astype(np.float64) * sb.astype(np.float64))
    y = torch.nn.functional.conv2d(xf, wf, bf, stride=stride, padding=k // 2, groups=groups).numpy()
    exact = np.clip(np.rint((np.maximum(y, 0) if relu else y) / float(sy)) + zy, 0, 255)
    name = (
        f"Conv {k}x{k}{' depthwise' if groups > 1 else ''}{' stride 2' if stride == 2 else ''} {cin}->{cout}, "
        f"input zero point {zx}" + (" + ReLU" if relu else "")
    )
    return {"kernel": name, **_compare(model, {"x": x}, exact)}


def add_case(rng, n: int = 20000) -> dict:
    """A residual Add of two uint8 tensors (zero point 128) requantized to a third scale."""
    sa, sb, sc = np.float32(0.0213), np.float32(0.0377), np.float32(0.0431)
    inits = [_const(k, v) for k, v in (("sa", sa), ("sb", sb), ("sc", sc))]
    inits += [_const(k, np.uint8(128)) for k in ("za", "zb", "zc")]
    nodes = [
        helper.make_node("DequantizeLinear", ["a", "sa", "za"], ["fa"]),
        helper.make_node("DequantizeLinear", ["b", "sb", "zb"], ["fb"]),
        helper.make_node("Add", ["fa", "fb"], ["s"]),
        helper.make_node("QuantizeLinear", ["s", "sc", "zc"], ["c"]),
    ]
    io = [helper.make_tensor_value_info(k, TensorProto.UINT8, [None, 64]) for k in ("a", "b")]
    graph = helper.make_graph(
        nodes, "add", io, [helper.make_tensor_value_info("c", TensorProto.UINT8, [None, 64])], inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    a, b = (rng.integers(0, 256, (n, 64), dtype=np.uint8) for _ in range(2))
    exact = np.rint(((a.astype(np.float64) - 128) * float(sa) + (b.astype(np.float64) - 128) * float(sb)) / float(sc))
    return {"kernel": "Add of two uint8 tensors", **_compare(model, {"a": a, "b": b}, np.clip(exact + 128, 0, 255))}


def _compare(model: onnx.ModelProto, feeds: dict, exact: np.ndarray) -> dict:
    out = {}
    for name, level in LEVELS.items():
        got = _session(model, level).run(None, feeds)[0].astype(np.int64)
        out[name] = {"differ": float(np.mean(got != exact)), "max_steps": int(np.abs(got - exact).max())}
    return out


def kernels_part() -> list[dict]:
    rng = np.random.default_rng(0)
    cases = [
        (64, 64, 1, 1, 128, False),
        (64, 64, 1, 1, 0, True),
        (32, 64, 3, 1, 0, True),
        (96, 96, 3, 96, 0, True),
        (96, 96, 3, 96, 128, False),
        (320, 160, 1, 1, 0, False),
        (192, 192, 3, 192, 0, True, 2),
        (192, 64, 1, 1, 0, False),
        (64, 384, 1, 1, 128, True),
    ]
    return [conv_case(rng, *c) for c in cases] + [add_case(rng)]


def _point_integers(path: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    """The integer (minus zero point) at every activation quantizer of an exported flavour."""
    model = onnx.load(path)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    outputs, zero = {}, {}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and "edgekd_actq_" in node.name:
            point = next(p for p in node.name.split("/") if p.startswith("edgekd_actq_"))
            zp = inits[node.input[2]]
            outputs[point], zero[point] = node.output[0], int(zp)
            elem = TensorProto.UINT8 if zp.dtype == np.uint8 else TensorProto.INT8
            model.graph.output.append(helper.make_tensor_value_info(node.output[0], elem, None))
    session = _session(model, LEVELS["fused"])
    got = session.run(list(outputs.values()), {session.get_inputs()[0].name: images})
    return {p: g.astype(np.int32) - zero[p] for p, g in zip(outputs, got, strict=True)}


def depth_part(args) -> dict:
    data = load_data(str(args.data), seed=0, max_train_samples=10000)
    norm = compute_normalization(data.train)
    fp32_path = ROOT / "benchmarks" / "work" / "quantization" / args.arch / f"fp32_{args.arch}_10000_10.pt"
    if not fp32_path.is_file():
        raise SystemExit(
            f"{fp32_path} is missing; run benchmarks/quantization.py --part accuracy --also {args.arch} "
            "--train-samples 10000 --epochs 10 first"
        )
    model = create_model(args.arch, num_classes=10, in_channels=3)
    model.load_state_dict(torch.load(fp32_path, weights_only=True))
    model.eval()
    images = Q._images(data.val, norm)[: args.images]
    calib_idx = np.random.default_rng(0).permutation(len(data.train))[:512]
    calib = Q._images(take(data.train, np.sort(calib_idx)), norm)
    qm = prepare_int8(model)
    qm.calibrate([torch.from_numpy(calib[i : i + 64]) for i in range(0, len(calib), 64)], "entropy")
    qm.eval()
    work = ROOT / "benchmarks" / "work" / "int8_parity" / args.arch
    work.mkdir(parents=True, exist_ok=True)
    export_int8(qm, work / "trt.onnx", work / "cpu.onnx", input_shape=(3, 32, 32))

    def integers(model: torch.nn.Module, x: torch.Tensor) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The integer at every activation quantizer of a fake-quant model, and its logits."""
        found: dict[str, np.ndarray] = {}

        def hook(name):
            def fn(module, inputs, output):
                found[name] = torch.clamp(torch.round(inputs[0] / module.scale), -128, 127).numpy().astype(np.int32)

            return fn

        handles = [
            m.register_forward_hook(hook(n)) for n, m in model.gm.named_children() if n.startswith("edgekd_actq_")
        ]
        with torch.no_grad():
            logits = model(x).numpy()
        for h in handles:
            h.remove()
        return found, logits

    # float64 fake quant: the same integer arithmetic with no float32 rounding (the reference)
    exact, exact_logits = integers(copy.deepcopy(qm).double(), torch.from_numpy(images).double())
    fake, fq_logits = integers(qm, torch.from_numpy(images))
    flavours = {"fake_quant": fake, **{f: _point_integers(work / f"{f}.onnx", images) for f in ("cpu", "trt")}}
    points = sorted(exact, key=lambda p: int(p.rsplit("_", 1)[1]))
    rows = []
    for i, p in enumerate(points):
        row = {"index": i, "point": getattr(qm.gm, p).point, "non_negative": getattr(qm.gm, p).non_negative}
        for f, ints in flavours.items():
            d = ints[p] - exact[p]
            row[f] = {"differ": float(np.mean(d != 0)), "max_steps": int(np.abs(d).max())}
        rows.append(row)
    logits = {"exact": exact_logits, "fake_quant": fq_logits}
    logits.update({f: Q._ort_logits(work / f"{f}.onnx", images) for f in ("cpu", "trt")})
    names = list(logits)
    agree = {
        f"{a}_vs_{b}": float(np.mean(logits[a].argmax(1) == logits[b].argmax(1)))
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    }
    local = {f: local_mismatch(qm, flavours[f], images, wide=f == "cpu") for f in ("cpu", "trt")}
    for row in rows:
        for f in local:
            row[f]["local_differ"] = local[f][points[row["index"]]]
    return {"arch": args.arch, "images": int(len(images)), "points": rows, "agreement": agree}


def local_mismatch(qm, ints: dict[str, np.ndarray], images: np.ndarray, wide: bool) -> dict[str, float]:
    """Each point's own share of differences: the float64 fake-quant model is fed the flavour's
    integers at every point, so each layer sees exactly the inputs the flavour's layer saw, and its
    rounded output is compared with the flavour's. ``wide``: ReLU outputs saturate at 255 steps (the
    cpu flavour's uint8 grid), not 127."""
    found: dict[str, float] = {}

    def hook(name):
        def fn(module, inputs, output):
            lo, hi = (0, 255) if (wide and module.non_negative) else (-128, 127)
            mine = torch.clamp(torch.round(inputs[0] / module.scale), lo, hi).numpy()
            found[name] = float(np.mean(mine != ints[name]))
            return torch.from_numpy(ints[name].astype(np.float64) * module.scale)

        return fn

    model = copy.deepcopy(qm).double()
    for n, m in model.gm.named_children():
        if n.startswith("edgekd_actq_"):
            m.register_forward_hook(hook(n))
    with torch.no_grad():
        model(torch.from_numpy(images).double())
    return found


def markdown(res: dict) -> str:
    lines = [
        "# INT8 parity: integer kernels against exact arithmetic, and differences along depth",
        "",
        "## ONNX Runtime kernels, one layer at a time",
        "",
        "Share of outputs that differ from the exact result (float64, rounded half to even), and the largest "
        "difference in quantization steps. `fused`: ONNX Runtime with its optimizations (the integer kernels of "
        "the cpu flavour); `float`: optimizations off (DequantizeLinear, float op, QuantizeLinear).",
        "",
        "| layer | fused: differ | fused: max steps | float: differ | float: max steps |",
        "|---|---:|---:|---:|---:|",
    ]
    for k in res["kernels"]:
        lines.append(
            f"| {k['kernel']} | {k['fused']['differ']:.2e} | {k['fused']['max_steps']} | "
            f"{k['float']['differ']:.2e} | {k['float']['max_steps']} |"
        )
    d = res.get("depth")
    if d:
        pts = d["points"]
        shown = sorted({*range(0, len(pts), max(1, len(pts) // 12)), len(pts) - 1})
        lines += [
            "",
            f"## {d['arch']}: integers against the float64 fake-quant model, by quantization point",
            "",
            f"{d['images']} CIFAR-10 test images; every {max(1, len(pts) // 12)}th of the {len(pts)} points "
            "and the last. Against the same fake-quant model run in float64 (the integer arithmetic without "
            "float32 rounding): the share of each point's integers that differ, and the largest difference in steps, "
            "for the float32 PyTorch fake quant, the cpu flavour and the TensorRT flavour (run by ONNX Runtime).",
            "",
            "| # | point | ReLU output | fake quant | cpu flavour | TensorRT flavour |",
            "|---:|---|---|---:|---:|---:|",
        ]
        for i in shown:
            r = pts[i]
            cells = " | ".join(
                f"{100 * r[f]['differ']:.3f}% ({r[f]['max_steps']})" for f in ("fake_quant", "cpu", "trt")
            )
            lines.append(f"| {r['index']} | `{r['point']}` | {'yes' if r['non_negative'] else 'no'} | {cells} |")
        local = {
            f: (float(np.mean([r[f]["local_differ"] for r in pts])), max(pts, key=lambda r: r[f]["local_differ"]))
            for f in ("cpu", "trt")
        }
        lines += [
            "",
            "Layer by layer (each point computed from the flavour's own integers at the points before it): "
            + "; ".join(
                f"{name} differs from exact on {m:.2e} of a point's integers on average, at most "
                f"{w[f]['local_differ']:.2e} (`{w['point']}`)"
                for f, name, (m, w) in (
                    ("cpu", "the cpu flavour", local["cpu"]),
                    ("trt", "the TensorRT flavour", local["trt"]),
                )
            )
            + ". The differences above are these rare 1-step roundings, compounded through the layers after them.",
        ]
        lines += [
            "",
            "Top-1 agreement on the same images: "
            + ", ".join(f"{k.replace('_vs_', ' vs ')} {100 * v:.2f}%" for k, v in d["agreement"].items())
            + ".",
        ]
    h = res["host"]
    lines += [
        "",
        f"Machine: {h.get('cpu')}, {h.get('logical_cores')} logical cores, onnxruntime {h.get('onnxruntime')}. "
        f"Command: `{res['command']}` ({res['finished']}).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "cifar10")
    parser.add_argument("--arch", default="mobilenetv2", help="a model benchmarks/quantization.py trained")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--kernels-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    res = {"kernels": kernels_part()}
    if not args.kernels_only:
        res["depth"] = depth_part(args)
    res.update(
        host=host_description(),
        command="python benchmarks/int8_parity.py " + " ".join(sys.argv[1:]),
        finished=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS / "int8_parity.json", res)
    atomic_write_text(RESULTS / "int8_parity.md", markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
