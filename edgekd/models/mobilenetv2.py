"""MobileNetV2 for CIFAR-sized inputs (Sandler et al., "MobileNetV2", CVPR 2018).

Built as RepDistiller builds it (github.com/HobbitLong/RepDistiller, models/mobilenetv2.py, from
"Knowledge Distillation via Route Constrained Optimization", Jin et al., ICCV 2019), module names
included (``conv1, blocks, conv2, classifier``; blocks hold ``conv``), so RepDistiller's
``mobile_half`` checkpoints load with ``strict=True``. ``mobilenetv2`` (width 0.5, expansion 6)
is their ``mobile_half``, the heterogeneous student of the CRD/DKD tables; ``mobilenetv2_x1_0``
is the full-width network.

Differences from the reference, none of which changes the state_dict: ``AdaptiveAvgPool2d(1)``
instead of ``AvgPool2d(input_size // 16, ceil_mode=True)`` (the same at 32x32, where the last
map is 2x2; any input size works), ``forward(x)`` returns logits only, ``in_channels`` is an
argument, and nothing is printed at construction.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from edgekd.models.registry import register_model


def conv_bn(inp: int, oup: int, stride: int) -> nn.Sequential:
    """3x3 conv-BN-ReLU."""
    return nn.Sequential(
        nn.Conv2d(inp, oup, 3, stride, 1, bias=False),
        nn.BatchNorm2d(oup),
        nn.ReLU(inplace=True),
    )


def conv_1x1_bn(inp: int, oup: int) -> nn.Sequential:
    """1x1 conv-BN-ReLU."""
    return nn.Sequential(
        nn.Conv2d(inp, oup, 1, 1, 0, bias=False),
        nn.BatchNorm2d(oup),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise 3x3 -> project (1x1, linear), residual when shapes allow."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.stride = stride
        self.use_res_connect = stride == 1 and inp == oup
        hidden = inp * expand_ratio
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, 1, 0, bias=False),  # pw
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),  # dw
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),  # pw-linear
            nn.BatchNorm2d(oup),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """RepDistiller's CIFAR MobileNetV2: stride-2 stem, seven inverted-residual stages, 1x1 head."""

    def __init__(self, T: int, feature_dim: int, width_mult: float = 1.0, in_channels: int = 3):
        super().__init__()
        # t (expansion), c (channels), n (blocks), s (first stride)
        self.interverted_residual_setting = [
            [1, 16, 1, 1],
            [T, 24, 2, 1],
            [T, 32, 3, 2],
            [T, 64, 4, 2],
            [T, 96, 3, 1],
            [T, 160, 3, 2],
            [T, 320, 1, 1],
        ]
        input_channel = int(32 * width_mult)
        self.conv1 = conv_bn(in_channels, input_channel, 2)

        self.blocks = nn.ModuleList([])
        for t, c, n, s in self.interverted_residual_setting:
            output_channel = int(c * width_mult)
            layers = []
            for stride in [s] + [1] * (n - 1):
                layers.append(InvertedResidual(input_channel, output_channel, stride, t))
                input_channel = output_channel
            self.blocks.append(nn.Sequential(*layers))

        self.last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = conv_1x1_bn(input_channel, self.last_channel)
        self.classifier = nn.Sequential(nn.Linear(self.last_channel, feature_dim))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self._initialize_weights()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        for block in self.blocks:
            out = block(out)
        out = self.conv2(out)
        out = torch.flatten(self.avgpool(out), 1)
        return self.classifier(out)

    def _initialize_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)


@register_model("mobilenetv2")
def mobilenetv2(num_classes: int, in_channels: int, width_mult: float = 0.5, expand_ratio: int = 6) -> MobileNetV2:
    """CIFAR MobileNetV2; the defaults are RepDistiller's ``mobile_half`` (T=6, width 0.5)."""
    return MobileNetV2(T=expand_ratio, feature_dim=num_classes, width_mult=width_mult, in_channels=in_channels)


@register_model("mobilenetv2_x1_0")
def mobilenetv2_x1_0(num_classes: int, in_channels: int, expand_ratio: int = 6) -> MobileNetV2:
    """CIFAR MobileNetV2 at full width (RepDistiller ``mobilenetv2_T_w(6, 1.0)``)."""
    return MobileNetV2(T=expand_ratio, feature_dim=num_classes, width_mult=1.0, in_channels=in_channels)
