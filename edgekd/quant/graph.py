"""Prepare a model for INT8: fold BatchNorm, trace it, and put fake quantizers where the Q/DQ go.

``prepare_int8(model)`` returns a :class:`QuantizedModel`: a ``torch.fx`` copy of the model with
every Conv-BN pair folded into one Conv (``torch.fx.experimental.optimization.fuse``), every
Conv/Linear wrapped in :class:`QuantWeighted` (per-channel INT8 weights) and an :class:`ActQuant`
right after every tensor that feeds a Conv, a Linear, an Add, a Concat or an average pool.

Why those points: TensorRT needs Q/DQ on the inputs of Conv/Gemm/MatMul; ONNX Runtime's fast CPU
kernels (QLinearConv, QLinearAdd) also need the Conv outputs that go into a residual Add, and the Add
itself, in the integer domain (its own ``quantize_static`` puts Q/DQ there). Quantizing each tensor
once, where it is produced, models exactly what both exported flavours compute, so the PyTorch
fake-quant model, the TensorRT flavour and the CPU flavour share one grid (export/int8_onnx.py).

Concat (the CSP blocks and the PAN neck of a detector): every input is quantized, and all inputs and
the Concat's own output share one scale (the largest calibrated amax of the group). That is
TensorRT's placement recommendation for Concat: with equal input scales the Q/DQ commute with the
Concat, which then runs in INT8 and is fused away (the producers write straight into its output),
and re-quantizing its output on the same grid changes nothing. Unequal scales would force TensorRT
to re-quantize (or run the Concat in higher precision); ``trt_rules`` checks that they are equal.

SiLU (x * sigmoid(x), the activation of YOLO-class detectors): the point after the SiLU is where
TensorRT wants the Q/DQ (it fuses Conv + SiLU + Q). ONNX Runtime's CPU kernels cannot fuse a SiLU:
with only that point, its Convs read INT8 but write float, and the INT8 model ran 1.7x slower than
FP32 (an edet_s at 192 px, 2 threads), while its own ``quantize_static`` (Q/DQ on every Conv output,
QLinearSigmoid and QLinearMul) ran at 0.52x. So each Conv output that goes into a SiLU also gets a
calibrated point (``cpu_only``): the fake-quant model and the TensorRT flavour do not apply it, the
CPU flavour quantizes the Conv output there and the Sigmoid output on [0, 1] (scale 1/255), so that
ONNX Runtime runs QLinearConv, QLinearSigmoid and QLinearMul (``int8_onnx.to_cpu_flavour``). The
extra rounding is one step of each tensor's own grid; the export's parity check measures it.

A point is called by the tensor's producer (``act:<node>``); a layer by its module path. Mixed
precision turns layers off (float weights); a point is turned off when every consumer of it is a
layer that is off.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import fx, nn

from edgekd.errors import EdgekdError
from edgekd.quant.calibrate import CALIBRATORS, Collector, compute_amax
from edgekd.quant.fakequant import ActQuant, QuantWeighted

WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Linear)
POOLS = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AvgPool1d, nn.AvgPool2d)
_ADD_FUNCS = (operator.add, operator.iadd, torch.add)
_CAT_FUNCS = (torch.cat, torch.concat)
_POOL_FUNCS = (F.adaptive_avg_pool2d, F.avg_pool2d, F.adaptive_avg_pool1d, F.avg_pool1d)
_RELU_FUNCS = (F.relu, torch.relu, F.relu6)
_SILU_FUNCS = (F.silu,)


class QuantizedModel(nn.Module):
    """The BN-folded, traced model with its fake quantizers (see the module docstring)."""

    def __init__(
        self,
        gm: fx.GraphModule,
        consumers: dict[str, list[str]],
        feeds_other: dict[str, bool],
        shared: list[list[str]] | None = None,
    ):
        super().__init__()
        self.gm = gm
        self.consumers = consumers  # point -> the layers it feeds
        self.feeds_other = feeds_other  # point -> it also feeds an Add, a Concat or a pool
        self.shared = shared or []  # groups of points that must share one scale (a Concat's inputs and output)
        self.skipped: list[str] = []

    def forward(self, x: torch.Tensor):
        return self.gm(x)

    def share_scales(self, amax: dict[str, float]) -> dict[str, float]:
        """``amax`` with every group of :attr:`shared` set to the group's largest value."""
        out = dict(amax)
        for group in self.shared:
            top = max(out[p] for p in group)
            for p in group:
                out[p] = top
        return out

    # -- the quantizers ----------------------------------------------------------------------
    @property
    def layers(self) -> dict[str, QuantWeighted]:
        return {m.name: m for m in self.gm.modules() if isinstance(m, QuantWeighted)}

    @property
    def points(self) -> dict[str, ActQuant]:
        return {m.point: m for m in self.gm.modules() if isinstance(m, ActQuant)}

    def set_skipped(self, layers: Iterable[str]) -> None:
        """Quantize everything except ``layers`` (kept in floating point: FP16 on TensorRT)."""
        skip = set(layers)
        unknown = skip - set(self.layers)
        if unknown:
            raise EdgekdError(f"unknown layers {sorted(unknown)} to keep in float; choose from {sorted(self.layers)}")
        self.skipped = [n for n in self.layers if n in skip]
        for name, layer in self.layers.items():
            layer.enabled = name not in skip
        for name, point in self.points.items():
            users = self.consumers.get(name, [])
            point.enabled = self.feeds_other.get(name, False) or not users or not set(users) <= skip

    def enable_only(self, layer: str | None) -> None:
        """Quantize only ``layer`` (its weights and the points that feed it); None: nothing at all."""
        for name, q in self.layers.items():
            q.enabled = name == layer
        for name, point in self.points.items():
            point.enabled = layer is not None and layer in self.consumers.get(name, [])

    def output_tap(self, path: str) -> str:
        """Where this model holds the output of the float model's module ``path`` (a stage such as
        ``layer1`` or ``blocks.1``), for feature KD during QAT: the quantizer on the last node traced
        inside that module, as a module path of this model (``gm.edgekd_actq_10``). The traced graph
        calls no block modules, so a stage tap of the float model has no module of its own here."""
        last = None
        for node in self.gm.graph.nodes:
            stack = node.meta.get("nn_module_stack") or {}
            scopes = set(stack) | {v[0] for v in stack.values() if isinstance(v, tuple) and v}
            if path in scopes or (node.op == "call_module" and node.target == path):
                last = node
        if last is None:
            raise EdgekdError(
                f"the quantized model has no trace of module {path!r}; name its stages with "
                "distill.taps.student.stages or set quantize.feature_method to null"
            )
        for user in last.users:
            if user.op == "call_module" and isinstance(self.gm.get_submodule(user.target), ActQuant):
                return f"gm.{user.target}"
        if last.op == "call_module":
            return f"gm.{last.target}"
        raise EdgekdError(
            f"module {path!r} ends in {last.name}, which the quantized model neither quantizes nor calls as a "
            "module; name other stages with distill.taps.student.stages or set quantize.feature_method to null"
        )

    def scale_table(self) -> dict[str, dict]:
        """Everything the export needs: per point amax and scale; per layer its per-channel weight scales."""
        return {
            "points": {
                n: {"amax": float(p.amax), "scale": p.scale, "enabled": p.enabled, "non_negative": p.non_negative}
                for n, p in self.points.items()
            },
            "layers": {
                n: {"enabled": q.enabled, "weight_scale": q.weight_scale().tolist(), "weight_qmax": q.weight_qmax}
                for n, q in self.layers.items()
            },
            "skipped": list(self.skipped),
            "shared_scales": [list(g) for g in self.shared],
            "cpu_outputs": self.cpu_output_scales(),
            "weight_bits": self.weight_bits,
        }

    def cpu_output_scales(self) -> dict[str, float]:
        """Layer -> the scale of its output for the CPU flavour (a Conv in front of a SiLU), for the
        layers in INT8."""
        layers = self.layers
        return {
            p.point[len("out:") :]: p.scale
            for p in self.points.values()
            if p.cpu_only and layers[p.point[len("out:") :]].enabled
        }

    @property
    def weight_bits(self) -> int:
        """8 (weights in [-127, 127]) or 7 (in [-63, 63]); the same for every layer."""
        qmax = {q.weight_qmax for q in self.layers.values()} or {127}
        return 7 if qmax == {63} else 8

    def set_weight_bits(self, bits: int) -> None:
        if bits not in (7, 8):
            raise ValueError(f"weight_bits must be 7 or 8, not {bits}")
        for q in self.layers.values():
            q.weight_qmax = 2 ** (bits - 1) - 1

    @contextmanager
    def biases_on_grid(self) -> Iterator[None]:
        """Within: every quantized layer's bias parameter rounded onto its int32 grid (the values the
        forward pass adds), for the export; the trained values come back afterwards."""
        saved = {}
        with torch.no_grad():
            for name, q in self.layers.items():
                s_b = q.bias_scale()
                if s_b is not None:
                    saved[name] = q.layer.bias.detach().clone()
                    q.layer.bias.copy_(torch.round(q.layer.bias / s_b) * s_b)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, bias in saved.items():
                    self.layers[name].layer.bias.copy_(bias)

    @contextmanager
    def float_weights(self) -> Iterator[None]:
        """Run with plain float weights (for the ONNX export, which writes INT8 weights itself)."""
        layers = list(self.layers.values())
        for q in layers:
            q.float_weights = True
        try:
            yield
        finally:
            for q in layers:
                q.float_weights = False

    # -- calibration -------------------------------------------------------------------------
    @torch.no_grad()
    def calibrate(
        self,
        batches: Iterable[torch.Tensor],
        method: str = "max",
        percentile: float = 99.99,
        score: Callable[[], float] | None = None,
    ) -> dict:
        """Set every point's amax from ``batches`` (the model runs in float while collecting).

        ``method="auto"`` computes all four calibrators from the one collection pass and keeps the
        one whose ``score()`` (the caller's top-1 on held-out images) is highest; ties go to the
        earlier of max, percentile, entropy, mse.

        A ReLU's output keeps its observed max whatever the method. The CPU flavour stores it as
        uint8 with zero point 0, so that ONNX Runtime fuses the ReLU away, and that grid saturates
        at 255 steps, not 127: below the observed max, fake quant and TensorRT would clip values
        that the CPU flavour keeps. Measured on the CIFAR resnet20 with mse calibration, the two
        flavours agreed on 99.42% of the test images (goal 99.5%). A uint8 Clip after each such
        tensor restored 99.92%, but cost 6% at batch 32. Clipping still applies to every signed
        tensor: residual sums, linear bottlenecks, the network input.
        """
        points = self.points
        layer_state = {n: q.enabled for n, q in self.layers.items()}
        for q in self.layers.values():
            q.enabled = False
        for i, p in enumerate(points.values()):
            p.collector = Collector(seed=i)
        was_training = self.training
        self.eval()
        seen = 0
        try:
            for x in batches:
                self(x)
                seen += int(x.shape[0])
        finally:
            collectors = {n: p.collector for n, p in points.items()}
            for p in points.values():
                p.collector = None
            for n, q in self.layers.items():
                q.enabled = layer_state[n]
            self.train(was_training)
        if seen == 0:
            raise EdgekdError("no calibration images; pass a dataset with a non-empty training split")

        def amax(name: str, calibrator: str) -> float:
            if points[name].non_negative:
                return compute_amax(collectors[name], "max")
            if points[name].cpu_only and calibrator == "max":
                # into a SiLU, flat below -6: clipping the rare tail costs nothing there, and the max grid
                # lost 0.0068 mAP in the CPU flavour of a BCCD edet_s (percentile 0.0012, entropy 0.0008)
                return compute_amax(collectors[name], "percentile", percentile)
            return compute_amax(collectors[name], calibrator, percentile)

        if method != "auto":
            table = self.share_scales({n: amax(n, method) for n in points})
            for n, p in points.items():
                p.amax.fill_(table[n])
            return {"images": seen, "method": method, "amax": {n: float(p.amax) for n, p in points.items()}}
        if score is None:
            raise ValueError("calibrator 'auto' needs a score function to choose with")
        tables, scores = {}, {}
        for candidate in CALIBRATORS:
            tables[candidate] = self.share_scales({n: amax(n, candidate) for n in points})
            for n, p in points.items():
                p.amax.fill_(tables[candidate][n])
            scores[candidate] = float(score())
        best = max(CALIBRATORS, key=lambda c: (scores[c], -CALIBRATORS.index(c)))
        for n, p in points.items():
            p.amax.fill_(tables[best][n])
        return {"images": seen, "method": best, "auto_scores": scores, "amax": dict(tables[best])}


def _is_relu(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), nn.ReLU | nn.ReLU6)
    if node.op == "call_function":
        return node.target in _RELU_FUNCS
    return node.op == "call_method" and node.target in ("relu", "relu_")


def _is_silu(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), nn.SiLU)
    return node.op == "call_function" and node.target in _SILU_FUNCS


def _kind(gm: fx.GraphModule, node: fx.Node) -> str | None:
    """'layer', 'add', 'concat' or 'pool' for the consumers that want quantized inputs; None otherwise."""
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        if isinstance(mod, (QuantWeighted, *WEIGHTED)):
            return "layer"
        if isinstance(mod, POOLS):
            return "pool"
    elif node.op == "call_function":
        if node.target in _ADD_FUNCS:
            return "add"
        if node.target in _CAT_FUNCS:
            return "concat"
        if node.target in _POOL_FUNCS:
            return "pool"
    elif node.op == "call_method" and node.target in ("add", "add_"):
        return "add"
    return None


def fold_batchnorm(model: nn.Module) -> fx.GraphModule:
    """A traced copy of ``model`` (eval mode) with each Conv-BN / Linear-BN pair folded into one layer."""
    from torch.fx.experimental.optimization import fuse

    clone = copy.deepcopy(model).cpu().eval()
    try:
        return fuse(clone)
    except Exception as err:  # torch.fx cannot trace data-dependent control flow
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise EdgekdError(
            f"{type(model).__name__} cannot be traced by torch.fx for INT8 quantization ({first}); "
            "run without quantization (--no-quantize) or use a traceable student"
        ) from None


def prepare_int8(model: nn.Module) -> QuantizedModel:
    """Fold BN, wrap every Conv/Linear, insert an ActQuant after every tensor a layer/Add/pool reads.

    The result is a new model for QAT, trainable even when ``model`` was frozen (the trainer freezes
    the model that teaches, and the FP32 student teaches its own quantized copy)."""
    gm = fold_batchnorm(model)
    for p in gm.parameters():
        p.requires_grad_(True)
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), WEIGHTED):
            parent, _, attr = node.target.rpartition(".")
            owner = gm.get_submodule(parent) if parent else gm
            setattr(owner, attr, QuantWeighted(gm.get_submodule(node.target), node.target))
    consumers: dict[str, list[str]] = {}
    feeds_other: dict[str, bool] = {}
    count = 0
    for node in list(graph.nodes):
        if node.op not in ("placeholder", "call_module", "call_function", "call_method"):
            continue
        users = [u for u in node.users if _kind(gm, u) is not None]
        if not users:
            continue
        name = f"act:{node.name}"
        module = ActQuant(name, non_negative=_is_relu(gm, node))
        target = f"edgekd_actq_{count}"
        count += 1
        gm.add_submodule(target, module)
        with graph.inserting_after(node):
            qnode = graph.call_module(target, (node,))
        node.replace_all_uses_with(qnode, delete_user_cb=lambda u, q=qnode: u is not q)
        consumers[name] = [u.target for u in users if _kind(gm, u) == "layer"]
        feeds_other[name] = any(_kind(gm, u) != "layer" for u in users)
    for node in list(graph.nodes):  # Conv outputs into a SiLU: calibrated for the CPU flavour only
        if not (node.op == "call_module" and isinstance(gm.get_submodule(node.target), QuantWeighted)):
            continue
        if not node.users or not all(_is_silu(gm, u) for u in node.users):
            continue
        target = f"edgekd_actq_{count}"
        count += 1
        gm.add_submodule(target, ActQuant(f"out:{node.target}", cpu_only=True))
        with graph.inserting_after(node):
            qnode = graph.call_module(target, (node,))
        node.replace_all_uses_with(qnode, delete_user_cb=lambda u, q=qnode: u is not q)
    layers = {m.name: m for m in gm.modules() if isinstance(m, QuantWeighted)}
    points = {m.point: m for m in gm.modules() if isinstance(m, ActQuant)}
    shared = _concat_groups(gm)
    for point, users in consumers.items():
        for layer in users:
            layers[layer].input_point = (points[point],)
    if not layers:
        raise EdgekdError(
            f"{type(model).__name__} has no Conv or Linear layer to quantize; run without quantization (--no-quantize)"
        )
    graph.lint()
    gm.recompile()
    return QuantizedModel(gm, consumers, feeds_other, shared)


def _concat_groups(gm: fx.GraphModule) -> list[list[str]]:
    """The points that must share a scale: each Concat's quantized inputs and its output's quantizer,
    merged where a point belongs to two Concats (union-find)."""

    def point_of(node: fx.Node) -> str | None:
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), ActQuant):
            return gm.get_submodule(node.target).point
        return None

    parent: dict[str, str] = {}

    def find(p: str) -> str:
        while parent.setdefault(p, p) != p:
            p = parent[p]
        return p

    for node in gm.graph.nodes:
        if _kind(gm, node) != "concat":
            continue
        inputs = node.args[0] if node.args else node.kwargs.get("tensors", [])
        members = [point_of(n) for n in inputs if isinstance(n, fx.Node)]
        members += [point_of(u) for u in node.users]
        members = [m for m in members if m is not None]
        for m in members[1:]:
            parent[find(m)] = find(members[0])
        if members:
            find(members[0])
    groups: dict[str, list[str]] = {}
    for p in parent:
        groups.setdefault(find(p), []).append(p)
    return [sorted(g) for g in groups.values() if len(g) > 1]
