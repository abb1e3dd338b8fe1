"""INT8 fake quantization: the numbers TensorRT's explicit quantization uses, simulated in float.

- Activations: symmetric per tensor, scale = amax / 127, zero point 0, range [-128, 127].
- Weights: symmetric per output channel (axis 0), scale = amax_c / 127, range [-127, 127]; with
  7-bit weights (``quantize.weight_bits=7``) scale = amax_c / 63, range [-63, 63], the grid that
  ONNX Runtime's ``reduce_range`` uses so U8S8 kernels cannot saturate on x86 without VNNI
  (edgekd/runtimes/onnxruntime/int8_encoding.py). Both are valid TensorRT INT8 weights.

(REFERENCES.md, "Quantization for TensorRT".) Both use ``torch.fake_quantize_*`` so gradients pass
straight through inside the range (the straight-through estimator QAT needs).

Why our own small modules instead of ``torch.ao`` or ``nvidia-modelopt``: modelopt's INT8 ONNX of a
resnet18 ran 1.5x slower than FP32 in ONNX Runtime here (BatchNorm left unfolded, int8 activations:
DESIGN.md), and both libraries decide Q/DQ placement and scale storage themselves; the export needs
one scale table that it writes twice (TensorRT rules and ONNX Runtime's uint8 CPU kernels), with
BatchNorm folded first. A few dozen lines give that control.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.quant.calibrate import Collector

INT32_MAX = 2**31 - 1


def weight_amax(weight: torch.Tensor) -> torch.Tensor:
    """Per-output-channel max |w| (axis 0), never zero."""
    return weight.detach().abs().flatten(1).amax(dim=1).clamp_min(1e-8)


def fake_quant_weight(weight: torch.Tensor, qmax: int = 127) -> torch.Tensor:
    """Symmetric per-channel fake quantization of a weight to [-qmax, qmax] (scale = amax_c / qmax)."""
    scale = (weight_amax(weight) / qmax).float()
    zero = torch.zeros(scale.shape, dtype=torch.int32, device=weight.device)
    return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -qmax, qmax)


class ActQuant(nn.Module):
    """Fake quantization of one activation tensor (per tensor, symmetric, scale = amax / 127).

    ``amax`` is a buffer set by calibration and kept fixed during QAT. While ``collector`` is set the
    module records statistics and passes its input through; while ``enabled`` is False it is the
    identity (a layer left in floating point by the mixed-precision search).
    """

    def __init__(self, point: str, non_negative: bool = False, cpu_only: bool = False):
        super().__init__()
        self.point = point
        self.non_negative = non_negative  # produced by a ReLU: the CPU flavour uses uint8 zero point 0
        # calibrated but never applied here: a Conv output in front of a SiLU, quantized in the CPU
        # flavour only (edgekd/quant/graph.py, "SiLU")
        self.cpu_only = cpu_only
        self.enabled = True
        self.collector: Collector | None = None
        self.register_buffer("amax", torch.tensor(1.0))

    @property
    def scale(self) -> float:
        return max(float(self.amax), 1e-8) / 127.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.collector is not None:
            self.collector.update(x.detach())
            return x
        if not self.enabled or self.cpu_only:
            return x
        return torch.fake_quantize_per_tensor_affine(x, self.scale, 0, -128, 127)

    def extra_repr(self) -> str:
        return f"{self.point}, amax={float(self.amax):.4g}, enabled={self.enabled}"


class QuantWeighted(nn.Module):
    """A Conv/Linear whose weight is fake-quantized per output channel when ``enabled``.

    Its bias is kept on the int32 grid that integer kernels use (scale s_in * s_w per channel, s_in
    the scale of the activation quantizer in front, ``input_point``), with a straight-through
    gradient. ONNX Runtime's QLinearConv and TensorRT add the bias in int32; a float bias a fraction
    of that step off moved enough roundings downstream that a CIFAR resnet20's top-1 agreed with
    ONNX Runtime on only 98.7% of the test images (99.6% with the bias on the grid).

    With ``float_weights`` (set only while exporting to ONNX) the layer runs its plain float
    weight: the ONNX export writes the INT8 weights itself, from the same per-channel scales.
    """

    def __init__(self, layer: nn.Module, name: str):
        super().__init__()
        if not isinstance(layer, nn.Conv1d | nn.Conv2d | nn.Linear):
            raise TypeError(f"only Conv1d, Conv2d and Linear can be quantized, not {type(layer).__name__}")
        self.layer = layer
        self.name = name
        self.enabled = True
        self.float_weights = False
        self.weight_qmax = 127  # 63 for 7-bit weights
        self.input_point: tuple[ActQuant, ...] = ()  # a tuple, so that it is not a submodule

    def bias_scale(self) -> torch.Tensor | None:
        """s_in * s_w per output channel, the bias's int32 grid; None when the bias stays float: the
        layer is not quantized, or the bias does not fit int32 on that grid (a large bias after a
        near-silent input, e.g. a detector's class prior -4.6 behind an untrained network), where the
        CPU flavour keeps it float too (``int8_onnx.to_cpu_flavour``)."""
        if self.layer.bias is None or not self.enabled or not self.input_point or not self.input_point[0].enabled:
            return None
        scale = self.input_point[0].scale * self.weight_scale()
        if bool((self.layer.bias.detach().abs() / scale > INT32_MAX).any()):
            return None
        return scale

    def weight_scale(self) -> torch.Tensor:
        """Per-output-channel weight scale, amax_c / qmax."""
        return weight_amax(self.layer.weight) / self.weight_qmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.layer.weight, self.layer.bias
        if self.enabled and not self.float_weights:
            w = fake_quant_weight(w, self.weight_qmax)
            s_b = self.bias_scale()
            if s_b is not None:
                b = b + (torch.round(b / s_b) * s_b - b).detach()
        if isinstance(self.layer, nn.Linear):
            return F.linear(x, w, b)
        return self.layer._conv_forward(x, w, b)
