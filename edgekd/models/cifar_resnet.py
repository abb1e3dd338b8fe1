"""CIFAR ResNets (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, Sec. 4.2).

Built exactly as RepDistiller builds them (github.com/HobbitLong/RepDistiller, models/resnet.py;
Tian et al., "Contrastive Representation Distillation", ICLR 2020), module names included, so a
RepDistiller or mdistiller CIFAR checkpoint loads with ``strict=True``: ``conv1, bn1, relu,
layer1..layer3, avgpool, fc`` and blocks with ``conv1, bn1, relu, conv2, bn2, downsample``.
These are the standard teacher/student pairs of the KD literature (resnet56 -> resnet20,
resnet110 -> resnet32, resnet32x4 -> resnet8x4).

Differences from the reference, none of which changes the state_dict:
- ``avgpool`` is ``AdaptiveAvgPool2d(1)`` instead of ``AvgPool2d(8)``: identical at 32x32 and it
  also works on 8x8 digits or 28x28 MNIST;
- ``forward(x)`` returns logits only (no ``is_feat``/``preact`` flags; feature taps are forward
  hooks installed by the trainer);
- ``in_channels`` is an argument (the reference hard-codes 3);
- the residual add is out of place, so a hook holding ``bn2``'s output is not overwritten.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.models.registry import register_model


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 conv-BN ``downsample``) shortcut."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(out + residual)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 bottleneck block (expansion 4), as in the reference (no zoo name uses it)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(out + residual)


class ResNet(nn.Module):
    """CIFAR ResNet: a 3x3 stem and three stages of ``n`` blocks (strides 1, 2, 2).

    ``depth`` is 6n+2 for basic blocks (9n+2 for bottlenecks); ``num_filters`` gives the stem
    width and the three stage widths.
    """

    def __init__(
        self,
        depth: int,
        num_filters: list[int],
        block_name: str = "BasicBlock",
        num_classes: int = 10,
        in_channels: int = 3,
    ):
        super().__init__()
        block: type[BasicBlock] | type[Bottleneck]
        if block_name.lower() == "basicblock":
            if (depth - 2) % 6 != 0:
                raise ValueError(f"with BasicBlock the depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")
            n = (depth - 2) // 6
            block = BasicBlock
        elif block_name.lower() == "bottleneck":
            if (depth - 2) % 9 != 0:
                raise ValueError(f"with Bottleneck the depth must be 9n+2 (29, 47, 56, 110), got {depth}")
            n = (depth - 2) // 9
            block = Bottleneck
        else:
            raise ValueError(f"block_name must be BasicBlock or Bottleneck, got {block_name!r}")

        self.inplanes = num_filters[0]
        self.conv1 = nn.Conv2d(in_channels, num_filters[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(num_filters[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, num_filters[1], n)
        self.layer2 = self._make_layer(block, num_filters[2], n, stride=2)
        self.layer3 = self._make_layer(block, num_filters[3], n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(num_filters[3] * block.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(
        self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int, stride: int = 1
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


# (depth, num_filters) as in RepDistiller models/resnet.py; the "x4" models are 4x wider.
_CONFIGS: dict[str, tuple[int, list[int]]] = {
    "resnet8": (8, [16, 16, 32, 64]),
    "resnet14": (14, [16, 16, 32, 64]),
    "resnet20": (20, [16, 16, 32, 64]),
    "resnet32": (32, [16, 16, 32, 64]),
    "resnet44": (44, [16, 16, 32, 64]),
    "resnet56": (56, [16, 16, 32, 64]),
    "resnet110": (110, [16, 16, 32, 64]),
    "resnet8x4": (8, [32, 64, 128, 256]),
    "resnet32x4": (32, [32, 64, 128, 256]),
}


def _register(name: str, depth: int, num_filters: list[int]) -> None:
    def factory(num_classes: int, in_channels: int) -> ResNet:
        return ResNet(depth, list(num_filters), "basicblock", num_classes=num_classes, in_channels=in_channels)

    factory.__name__ = name
    factory.__qualname__ = name
    factory.__doc__ = f"CIFAR ResNet, depth {depth}, filters {num_filters} (RepDistiller {name})."
    register_model(name)(factory)


for _name, (_depth, _filters) in _CONFIGS.items():
    _register(_name, _depth, _filters)
