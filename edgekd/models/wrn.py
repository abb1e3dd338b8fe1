"""Wide Residual Networks for CIFAR (Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016).

Built as RepDistiller builds them (github.com/HobbitLong/RepDistiller, models/wrn.py), module
names included, so RepDistiller/mdistiller checkpoints load with ``strict=True``: ``conv1,
block1..block3`` (each a ``NetworkBlock`` holding ``layer``), ``bn1, relu, fc``; pre-activation
blocks with ``bn1, relu1, conv1, bn2, relu2, conv2, convShortcut``. WRN-40-2 -> WRN-16-2 is a
standard KD pair (CRD, ICLR 2020; DKD, CVPR 2022).

Differences from the reference, none of which changes the state_dict: adaptive average pooling
instead of ``avg_pool2d(out, 8)`` (same at 32x32, also works on smaller inputs); ``forward(x)``
returns logits only; ``in_channels`` is an argument; dropout defaults to 0 (as there).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.models.registry import register_model


class BasicBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3 plus a shortcut."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, dropRate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.droprate = dropRate
        self.equalInOut = in_planes == out_planes
        self.convShortcut: nn.Conv2d | None = (
            None
            if self.equalInOut
            else nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.equalInOut:
            out = self.relu1(self.bn1(x))
        else:
            x = self.relu1(self.bn1(x))
            out = x
        out = self.relu2(self.bn2(self.conv1(out)))
        if self.droprate > 0:
            out = F.dropout(out, p=self.droprate, training=self.training)
        out = self.conv2(out)
        shortcut = x if self.convShortcut is None else self.convShortcut(x)
        return shortcut + out


class NetworkBlock(nn.Module):
    """``nb_layers`` blocks in ``self.layer``; the first changes width and applies the stride."""

    def __init__(
        self,
        nb_layers: int,
        in_planes: int,
        out_planes: int,
        block: type[BasicBlock],
        stride: int,
        dropRate: float = 0.0,
    ):
        super().__init__()
        self.layer = nn.Sequential(
            *[
                block(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, dropRate)
                for i in range(nb_layers)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-k: a 3x3 stem, three stages of (depth-4)/6 blocks of widths 16k, 32k, 64k."""

    def __init__(
        self,
        depth: int,
        num_classes: int,
        widen_factor: int = 1,
        dropRate: float = 0.0,
        in_channels: int = 3,
    ):
        super().__init__()
        n_channels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4 (16, 22, 28, 40), got {depth}")
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(in_channels, n_channels[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, n_channels[0], n_channels[1], BasicBlock, 1, dropRate)
        self.block2 = NetworkBlock(n, n_channels[1], n_channels[2], BasicBlock, 2, dropRate)
        self.block3 = NetworkBlock(n, n_channels[2], n_channels[3], BasicBlock, 2, dropRate)
        self.bn1 = nn.BatchNorm2d(n_channels[3])
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(n_channels[3], num_classes)
        self.nChannels = n_channels[3]

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.block1(out)
        out = self.block2(out)
        out = self.block3(out)
        out = self.relu(self.bn1(out))
        out = torch.flatten(self.avgpool(out), 1)
        return self.fc(out)


def _register(name: str, depth: int, widen_factor: int) -> None:
    def factory(num_classes: int, in_channels: int, dropout: float = 0.0) -> WideResNet:
        return WideResNet(depth, num_classes, widen_factor, dropRate=dropout, in_channels=in_channels)

    factory.__name__ = name
    factory.__qualname__ = name
    factory.__doc__ = f"WRN-{depth}-{widen_factor} (RepDistiller {name}); ``dropout`` inside blocks."
    register_model(name)(factory)


for _name, _depth, _k in [("wrn_16_1", 16, 1), ("wrn_16_2", 16, 2), ("wrn_40_1", 40, 1), ("wrn_40_2", 40, 2)]:
    _register(_name, _depth, _k)
