"""The layer grid that ``edgekd profile`` measures, and how the table prices shapes between its points.

The grid covers what the estimate needs on mobile backbones and detectors: plain, 1x1, depthwise
and grouped convolutions (at classifier and detector resolutions), the two tiny 1x1 convolutions
and the broadcast ``Mul`` of squeeze-excitation blocks, standalone activations (SiLU, HardSwish,
Sigmoid, ReLU), the memory-bound ops of necks and heads (Add, Concat, Resize, Transpose, Slice,
Softmax, pooling) and ONNX ``NonMaxSuppression`` against its number of candidates. Nothing in it
depends on the host's instruction set: the same grid runs on an AVX2, AVX-512 or ARM machine and
its table then describes that machine.

Interpolation (:func:`interpolate_conv`): a convolution the grid did not measure is priced by the
per-kind fit (``ms = a + b*MFLOPs + c*M elements``) times a correction learnt from the measured
points of the same kind nearby: ``exp(sum w_i log(ms_i / fit_i) / sum w_i)`` over the points with
the nearest kernel and stride (discrete: nearest, never blended), weighted by ``1 / (d_i^2 + 0.25)``
where ``d_i`` is the Euclidean distance in log2 of input channels, output channels and spatial
size; a pseudo-point with no correction at distance 1.5 pulls the estimate back to the fit when
every measured point is far away (more than a factor ~3 in some dimension).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

CONV_KINDS = ("conv", "conv1x1", "dwconv", "gconv")
# Grid kinds priced as memory-bound ops -> the ONNX op the fused layer carries (Layer.op)
MEMORY_OPS = {
    "add": "Add",
    "mul": "MulBcast",
    "concat": "Concat",
    "silu": "SiLU",
    "hardswish": "HardSwish",
    "sigmoid": "Sigmoid",
    "relu": "Relu",
    "resize": "Resize",
    "transpose": "Transpose",
    "slice": "Slice",
    "softmax": "Softmax",
}
# Grid points above this many FLOPs are skipped: they take long to time and add little to the fit.
MAX_GRID_FLOPS = 6e8


@dataclass(frozen=True)
class GridPoint:
    """One single-layer benchmark: its kind and the arguments of its builder (``nms``: ``c_in`` classes,
    ``hw`` candidate boxes)."""

    kind: str
    c_in: int
    hw: int
    c_out: int = 0
    k: int = 3
    stride: int = 1
    groups: int = 1

    def label(self) -> str:
        g = f" g{self.groups}" if self.groups > 1 else ""
        return f"{self.kind} c{self.c_in}->{self.c_out} {self.hw}x{self.hw} k{self.k} s{self.stride}{g}"


def quick_grid() -> list[GridPoint]:
    """A dozen points, one or two per kind: seconds to run (tests, a first look)."""
    return [
        GridPoint("conv", 16, 16, 16),
        GridPoint("conv", 32, 8, 32),
        GridPoint("conv1x1", 16, 16, 32, k=1),
        GridPoint("conv1x1", 64, 8, 64, k=1),
        GridPoint("dwconv", 32, 16, k=3),
        GridPoint("dwconv", 64, 8, k=3),
        GridPoint("gemm", 64, 1, 10),
        GridPoint("gemm", 256, 1, 100),
        GridPoint("gap", 64, 8),
        GridPoint("maxpool", 16, 16, k=3, stride=2),
        GridPoint("add", 16, 16),
        GridPoint("concat", 16, 8),
        GridPoint("silu", 16, 16),
        GridPoint("nms", 1, 500),
        GridPoint("nms", 3, 2100),
    ]


def _classifier_points() -> list[GridPoint]:
    """Layers of small CNNs at 8-224 px (the classifier grid of the first latency model)."""
    points: list[GridPoint] = []
    for c in (8, 16, 32, 64, 128, 256):
        for hw in (4, 8, 16, 32, 56):
            points.append(GridPoint("conv", c, hw, c))
            points.append(GridPoint("conv", c, hw * 2, 2 * c, stride=2))
    for c_in, c_out, hw, k, s in ((1, 16, 8, 3, 1), (3, 16, 32, 3, 1), (3, 32, 224, 3, 2), (3, 64, 224, 7, 2)):
        points.append(GridPoint("conv", c_in, hw, c_out, k=k, stride=s))
    for c_in, c_out in ((16, 32), (32, 16), (32, 128), (128, 32), (64, 256), (256, 64), (96, 576), (576, 96)):
        for hw in (4, 8, 16, 32, 56):
            points.append(GridPoint("conv1x1", c_in, hw, c_out, k=1))
    for c in (16, 32, 96, 144, 384, 576):
        for hw in (7, 14, 28, 56):
            points.append(GridPoint("dwconv", c, hw, k=3))
        points.append(GridPoint("dwconv", c, 28, k=5))
        points.append(GridPoint("dwconv", c, 28, k=3, stride=2))
    for c in (24, 48, 96, 192, 384):
        for hw in (4, 8, 16, 32):
            points.append(GridPoint("dwconv", c, hw, k=3))
        points.append(GridPoint("dwconv", c, 16, k=3, stride=2))
    for c_in, c_out in ((16, 96), (96, 16), (32, 192), (192, 32), (64, 384), (384, 64), (32, 32), (128, 128)):
        for hw in (4, 8, 16, 32):
            points.append(GridPoint("conv1x1", c_in, hw, c_out, k=1))
    for c_in, c_out in ((64, 10), (256, 10), (512, 10), (1280, 10), (512, 1000), (1024, 1000), (2048, 1000)):
        points.append(GridPoint("gemm", c_in, 1, c_out))
    for c, hw in ((16, 32), (64, 56), (64, 112)):
        points.append(GridPoint("maxpool", c, hw, k=3, stride=2))
    return points


def _mobile_and_detector_points() -> list[GridPoint]:
    """What mobile backbones and detectors add: depthwise convolutions at 5x5 and stride 2 over
    detector resolutions, grouped convolutions, squeeze-excitation pieces, 3x3 convolutions on
    20-160 px maps, activations and memory-bound ops, and NMS."""
    points: list[GridPoint] = []
    for c in (16, 40, 72, 120, 240, 480, 960):
        for hw in (10, 20, 40, 80, 160):
            for k, s in ((3, 1), (5, 1), (3, 2), (5, 2)):
                if c * hw * hw <= 3e6:
                    points.append(GridPoint("dwconv", c, hw, k=k, stride=s))
    for c, g in ((32, 4), (64, 8), (128, 16), (256, 32)):
        for hw in (7, 14, 28):
            points.append(GridPoint("gconv", c, hw, c, groups=g))
    # squeeze-excitation: the two 1x1 convolutions on the pooled vector, both directions
    for c in (16, 72, 120, 240, 480, 960):
        points.append(GridPoint("conv1x1", c, 1, max(8, c // 4), k=1))
        points.append(GridPoint("conv1x1", max(8, c // 4), 1, c, k=1))
    for c in (16, 24, 32, 64, 128, 256):
        for hw in (10, 20, 40, 80, 160):
            if c * hw * hw <= 2e6:
                points.append(GridPoint("conv", c, hw, c))
                points.append(GridPoint("conv1x1", c, hw, c, k=1))
                points.append(GridPoint("conv1x1", 2 * c, hw, c, k=1))
                points.append(GridPoint("conv", c, hw, 2 * c, stride=2))
    for c, hw in ((16, 160), (24, 80), (40, 40), (64, 40), (96, 20), (160, 20), (256, 10), (960, 7), (64, 80)):
        points.append(GridPoint("gap", c, hw))
        for kind in MEMORY_OPS:
            if kind != "softmax":
                points.append(GridPoint(kind, c, hw))
    for c, hw in ((32, 40), (64, 80), (128, 40)):
        points.append(GridPoint("maxpool", c, hw, k=5, stride=1))  # SPPF-style
    for anchors in (400, 1600, 6400, 25600):  # DFL softmax over 16 bins: [1, anchors, 4, 16]
        points.append(GridPoint("softmax", anchors, 4, 16))
    for classes, anchors in ((1, 500), (1, 2100), (3, 2100), (10, 2100), (3, 8400), (10, 8400), (20, 3549)):
        points.append(GridPoint("nms", classes, anchors))
    return points


def default_grid() -> list[GridPoint]:
    """About 500 points (a few minutes on 2 cores): classifier and detector layers alike."""
    points = list(dict.fromkeys(_classifier_points() + _mobile_and_detector_points()))
    return [p for p in points if point_flops(p) <= MAX_GRID_FLOPS]


def point_flops(point: GridPoint) -> float:
    hw_out = math.ceil(point.hw / point.stride)
    if point.kind == "conv":
        return 2.0 * point.c_out * hw_out * hw_out * point.c_in * point.k * point.k
    if point.kind == "gconv":
        return 2.0 * point.c_out * hw_out * hw_out * point.c_in // point.groups * point.k * point.k
    if point.kind == "conv1x1":
        return 2.0 * point.c_out * hw_out * hw_out * point.c_in
    if point.kind == "dwconv":
        return 2.0 * point.c_in * hw_out * hw_out * point.k * point.k
    if point.kind == "nms":
        return float(point.c_in * point.hw)
    return float(point.c_in * point.hw * point.hw)


# ---- interpolation between measured convolutions -------------------------------------------------
_CONV_KEY = re.compile(r"^(\w+):n(\d+):c(\d+):hw([\dx]+):o(\d+):k([\dx]+):s([\dx]+):g(\d+)$")
PRIOR_DISTANCE = 1.5  # log2 units: a pseudo-point with no correction, so far points fade to the fit


def parse_conv_key(key: str) -> dict | None:
    """The fields of a convolution layer key (``graph_cost`` writes them), or None for other keys."""
    m = _CONV_KEY.match(key)
    if m is None:
        return None
    spatial = [int(x) for x in m.group(4).split("x") if x]
    return {
        "kind": m.group(1),
        "n": int(m.group(2)),
        "c": int(m.group(3)),
        "hw": math.sqrt(math.prod(spatial)) if spatial else 1.0,
        "o": int(m.group(5)),
        "k": max(int(x) for x in m.group(6).split("x")),
        "s": max(int(x) for x in m.group(7).split("x")),
        "g": int(m.group(8)),
    }


def _log2(x: float) -> float:
    return math.log2(max(x, 1e-9))


def interpolate_conv(key: str, fit_ms: float, measured: list[tuple[dict, float, float]]) -> float | None:
    """Milliseconds of the convolution ``key`` from the per-kind fit (``fit_ms``) corrected by the
    measured points of its kind, ``measured`` = [(parsed key, measured ms, fit ms)]. None when
    ``key`` is not a convolution or nothing of its kind was measured."""
    q = parse_conv_key(key)
    if q is None or fit_ms <= 0:
        return None
    same = [m for m in measured if m[0]["kind"] == q["kind"] and m[0]["n"] == q["n"]]
    if not same:
        return None
    # discrete dimensions: the nearest kernel size, then the nearest stride (never blended)
    k_best = min({m[0]["k"] for m in same}, key=lambda k: (abs(k - q["k"]), k))
    same = [m for m in same if m[0]["k"] == k_best]
    s_best = min({m[0]["s"] for m in same}, key=lambda s: (abs(s - q["s"]), s))
    same = [m for m in same if m[0]["s"] == s_best]
    num, den = 0.0, 1.0 / (PRIOR_DISTANCE**2 + 0.25)  # the pseudo-point contributes log(1) = 0
    for p, ms, fit in same:
        if ms <= 0 or fit <= 0:
            continue
        d2 = (
            (_log2(p["c"]) - _log2(q["c"])) ** 2
            + (_log2(p["o"]) - _log2(q["o"])) ** 2
            + (_log2(p["hw"]) - _log2(q["hw"])) ** 2
        )
        w = 1.0 / (d2 + 0.25)
        num += w * math.log(ms / fit)
        den += w
    return fit_ms * math.exp(num / den)
