"""How the ONNX Runtime CPU flavour stores the INT8 grid, chosen by the instruction set that runs it.

One quantized model has one grid: int8 activations (scale s, zero point 0) and int8 per-channel
weights in [-127, 127] (``int8_onnx.py``). ONNX Runtime's CPU kernels (MLAS) run that grid fastest
as uint8 activations x int8 weights (U8S8). How exact U8S8 is depends on the processor:

- x86 with VNNI (AVX-512 VNNI, AVX-VNNI): ``VPDPBUSD`` multiplies u8 x s8 and accumulates in int32.
  Exact.
- ARM64: the kernels widen before they accumulate. Exact. ONNX Runtime's quantization guide,
  "When and why do I need to try U8U8?": "There is no such issue on other CPU architectures (x64
  with VNNI and ARM)".
- x86 without VNNI (AVX2, AVX-512 without VNNI): ``VPMADDUBSW`` multiplies u8 x s8 and adds each
  pair of products into a *saturating int16*. With activations centred on zero point 128 and
  weights near +-127 the pair sum reaches 2 x 255 x 127 = 64,770 > 32,767 and is clipped. The guide
  recommends U8U8 or 7-bit weights (``reduce_range``) there. The failure this module prevents:
  the CPU flavour of a digits student agreed with fake quant on 66.7% of images on an AVX2-only
  EPYC (issue 15), and ``tests/test_cpu_encoding.py`` reproduces it under QEMU's Haswell model.

So the choice, per instruction set (``choose_encoding``):

    VNNI x86, ARM64                      u8s8   exact and fastest
    x86 without VNNI, weights <= 63      u8s8   |w_a| + |w_b| <= 126, so 255 x 126 = 32,130 fits int16
    x86 without VNNI, 8-bit weights      u8u8   weights stored as uint8 + 128 with zero point 128:
                                                the same grid, lossless; MLAS widens u8 x u8 to int16
                                                before multiplying, so nothing saturates
    unknown processor                    u8u8   exact on every CPU

The bound is checked on the actual weights (``u8s8_pair_bound``): 2 x max|q| x 255 over every
output channel, an upper bound of any pair MLAS may form whatever its packing order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from edgekd.host import ISA_DESCRIPTIONS, host_isa

INT16_MAX = 32767
U8_MAX = 255
ENCODING_KEY = "edgekd.cpu_int8_encoding"  # ONNX metadata_props key the export writes
GUIDE = "ONNX Runtime quantization guide, 'When and why do I need to try U8U8?'"


def u8s8_exact(isa: str, pair_bound: int) -> bool:
    """True when U8S8 kernels compute exactly on ``isa`` for weights whose pair bound is ``pair_bound``."""
    if isa in ("x86-64-vnni", "arm64"):
        return True
    if isa.startswith("x86-64"):
        return pair_bound <= INT16_MAX
    return False


@dataclass(frozen=True)
class Encoding:
    """The storage chosen for the CPU flavour, and why (written to export/int8.json and the report)."""

    name: str  # "u8s8" or "u8u8"
    isa: str  # the instruction-set class it was chosen for
    isa_source: str  # "target profile" or "this host's /proc/cpuinfo"
    pair_bound: int  # 2 x max|q_w| x 255 over every quantized layer
    reason: str

    def as_dict(self) -> dict:
        return {**asdict(self), "isa_description": ISA_DESCRIPTIONS.get(self.isa, self.isa)}


def choose_encoding(isa: str, pair_bound: int, *, isa_source: str) -> Encoding:
    """U8S8 where it is exact on ``isa`` (fastest), else U8U8 (the same grid, exact everywhere)."""
    what = ISA_DESCRIPTIONS.get(isa, isa)
    if isa in ("x86-64-vnni", "arm64"):
        how = "VPDPBUSD accumulates in int32" if isa == "x86-64-vnni" else "the kernels widen before adding"
        return Encoding("u8s8", isa, isa_source, pair_bound, f"{what}: {how}, U8S8 is exact and fastest ({GUIDE})")
    if u8s8_exact(isa, pair_bound):
        reason = (
            f"{what}: VPMADDUBSW adds pairs of u8 x s8 products into saturating int16, but these weights "
            f"bound any pair at {pair_bound} <= {INT16_MAX}, so U8S8 is exact"
        )
        return Encoding("u8s8", isa, isa_source, pair_bound, reason)
    if isa.startswith("x86-64"):
        reason = (
            f"{what}: VPMADDUBSW adds pairs of u8 x s8 products into saturating int16 and these weights reach "
            f"{pair_bound} > {INT16_MAX}, so U8S8 would saturate; U8U8 stores the same grid and is exact ({GUIDE}). "
            "quantize.weight_bits=7 makes U8S8 exact here"
        )
        return Encoding("u8u8", isa, isa_source, pair_bound, reason)
    return Encoding("u8u8", isa, isa_source, pair_bound, f"{what}: U8U8 is exact on every CPU ONNX Runtime runs on")


# ---- the weights in the graph -----------------------------------------------------------------
def _int8_weight_inits(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """Initializers of quantized weights: int8 tensors read by a per-channel DequantizeLinear."""
    inits = {init.name: init for init in model.graph.initializer}
    names = [
        node.input[0]
        for node in model.graph.node
        if node.op_type == "DequantizeLinear"
        and node.input[0] in inits
        and inits[node.input[0]].data_type == TensorProto.INT8
        and inits[node.input[0]].dims
    ]
    return [inits[n] for n in dict.fromkeys(names)]


def u8s8_pair_bound(model: onnx.ModelProto) -> int:
    """The largest value a VPMADDUBSW pair can reach: 2 x max|q_w| x 255 (0 for a model with no int8 weights)."""
    qmax = 0
    for init in _int8_weight_inits(model):
        q = numpy_helper.to_array(init)
        qmax = max(qmax, int(np.abs(q.astype(np.int32)).max()))
    return 2 * qmax * U8_MAX


def weights_to_uint8(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose int8 weights are uint8 (q + 128, zero point 128): the same grid, for U8U8."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {init.name: init for init in out.graph.initializer}
    weights = {init.name for init in _int8_weight_inits(out)}
    for node in out.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in weights:
            continue
        if len(node.input) < 3:
            raise ValueError(f"{node.name} has no zero point")
        for name in (node.input[0], node.input[2]):  # q + 128 and zero point 0 + 128: the same grid
            value = numpy_helper.to_array(inits[name]).astype(np.int16) + 128
            inits[name].CopyFrom(numpy_helper.from_array(value.astype(np.uint8), name))
    _set_encoding(out, "u8u8")
    return out


def apply_encoding(model: onnx.ModelProto, encoding: str) -> onnx.ModelProto:
    """``model`` (a CPU flavour with int8 weights) stored as ``encoding``; tagged in its metadata."""
    if encoding == "u8u8":
        return weights_to_uint8(model)
    if encoding != "u8s8":
        raise ValueError(f"unknown CPU INT8 encoding {encoding!r}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    _set_encoding(out, "u8s8")
    return out


def _set_encoding(model: onnx.ModelProto, encoding: str) -> None:
    for prop in model.metadata_props:
        if prop.key == ENCODING_KEY:
            prop.value = encoding
            return
    model.metadata_props.add(key=ENCODING_KEY, value=encoding)


def model_encoding(model: onnx.ModelProto) -> str | None:
    """The encoding the export wrote into ``model``'s metadata, or None (not a tagged CPU flavour)."""
    return next((p.value for p in model.metadata_props if p.key == ENCODING_KEY), None)


def exact_on_host(model: onnx.ModelProto, isa: str | None = None) -> onnx.ModelProto:
    """``model``, or its U8U8 re-encoding when its U8S8 weights would saturate on this host (``isa``).

    Parity checks and the host bench run what the host can run exactly; the file written for the
    target is not changed.
    """
    if model_encoding(model) != "u8s8":
        return model
    if u8s8_exact(isa or host_isa(), u8s8_pair_bound(model)):
        return model
    return weights_to_uint8(model)


def vpmaddubsw_dot(a_u8: np.ndarray, b_s8: np.ndarray) -> np.ndarray:
    """What x86's u8 x s8 kernel without VNNI computes for ``a_u8 @ b_s8``: exact products, each adjacent
    pair summed with int16 saturation (VPMADDUBSW), then the pair sums added in int32 (VPMADDWD with 1s).

    ``a_u8`` is (M, K) uint8, ``b_s8`` (K, N) int8; K is padded to even with zeros. The tests use it to
    show the saturation on any machine, VNNI or not.
    """
    a = a_u8.astype(np.int32)
    b = b_s8.astype(np.int32)
    if a.shape[1] % 2:
        a = np.pad(a, ((0, 0), (0, 1)))
        b = np.pad(b, ((0, 1), (0, 0)))
    products = a[:, :, None] * b[None, :, :]  # (M, K, N), each fits int16 (255 x 127)
    pairs = products[:, 0::2, :] + products[:, 1::2, :]
    return np.clip(pairs, -INT16_MAX - 1, INT16_MAX).sum(axis=1).astype(np.int32)


def host_model_source(path: str | Path, isa: str | None = None) -> str | bytes:
    """What to give ``ort.InferenceSession`` to run the file at ``path`` exactly on this host: the path
    itself, or the serialized U8U8 re-encoding of a U8S8 CPU flavour that would saturate here."""
    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not readable as ONNX: let ONNX Runtime report it
        return str(path)
    if model_encoding(model) != "u8s8":
        return str(path)
    exact = exact_on_host(model, isa)
    return str(path) if exact is model else exact.SerializeToString()


def host_run_description(path: str | Path) -> dict | None:
    """For a tagged CPU flavour: its encoding, the host's instruction set, and the encoding the host
    runs (``run_as`` differs when U8S8 would saturate here); None for any other file."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return None
    encoding = model_encoding(model)
    if encoding is None:
        return None
    isa = host_isa()
    run_as = model_encoding(exact_on_host(model, isa))
    return {"encoding": encoding, "host_isa": isa, "run_as": run_as}
