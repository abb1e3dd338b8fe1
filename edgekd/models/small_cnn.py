"""Small plain CNNs for tiny images: scikit-learn digits (8x8x1) and MNIST (28x28x1).

The CIFAR zoo is sized for 32x32x3 and takes minutes per epoch on a CPU; these take seconds, so
the bundled default dataset (sklearn digits), the tests and the quick-start can run a real
teacher -> student distillation on a 2-core machine. They echo the MNIST experiment of Hinton
et al., "Distilling the Knowledge in a Neural Network" (2015): a bigger teacher, a much smaller
student, the same data.

Layout (VGG-like, Simonyan & Zisserman 2015): three stages of conv3x3-BN-ReLU blocks; stage 1
keeps the resolution, stages 2 and 3 halve it with a stride-2 first conv; then adaptive average
pooling and a linear classifier, so any input of 8x8 or more works (8 -> 8, 4, 2; 28 -> 28, 14,
7). The stage outputs ``stage1..stage3`` and the pooled vector (input of ``fc``) are the natural
feature taps.

| name       | stage widths  | convs/stage | params (10 classes, 1 channel) |
|------------|---------------|-------------|--------------------------------|
| cnn_tiny   | 8, 16, 32     | 1, 1, 1     | ~6.3k                          |
| cnn_small  | 24, 48, 64    | 1, 1, 1     | ~39k                           |
| cnn_medium | 32, 64, 128   | 1, 2, 2     | ~0.28M                         |
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from edgekd.models.registry import register_model


class ConvBNReLU(nn.Sequential):
    """3x3 conv (no bias) -> BatchNorm -> ReLU, as ``conv``, ``bn``, ``relu``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)


class SmallCNN(nn.Module):
    """Three stages of :class:`ConvBNReLU` blocks, adaptive average pooling, dropout, linear."""

    def __init__(
        self,
        widths: Sequence[int],
        depths: Sequence[int],
        num_classes: int = 10,
        in_channels: int = 1,
        dropout: float = 0.0,
    ):
        super().__init__()
        if len(widths) != 3 or len(depths) != 3 or min(depths) < 1:
            raise ValueError(f"need 3 stage widths and 3 depths >= 1, got {widths} and {depths}")
        channels = in_channels
        for i, (width, depth) in enumerate(zip(widths, depths, strict=True)):
            blocks = []
            for j in range(depth):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(ConvBNReLU(channels, width, stride))
                channels = width
            self.add_module(f"stage{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage1(x)
        x = self.stage2(x)
        x = self.stage3(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(self.dropout(x))


@register_model("cnn_tiny")
def cnn_tiny(num_classes: int, in_channels: int, dropout: float = 0.0) -> SmallCNN:
    """~6k parameters: a student for digits/MNIST."""
    return SmallCNN((8, 16, 32), (1, 1, 1), num_classes, in_channels, dropout)


@register_model("cnn_small")
def cnn_small(num_classes: int, in_channels: int, dropout: float = 0.0) -> SmallCNN:
    """~40k parameters: a student (or a small teacher) for digits/MNIST."""
    return SmallCNN((24, 48, 64), (1, 1, 1), num_classes, in_channels, dropout)


@register_model("cnn_medium")
def cnn_medium(num_classes: int, in_channels: int, dropout: float = 0.0) -> SmallCNN:
    """~0.28M parameters: a good digits/MNIST teacher."""
    return SmallCNN((32, 64, 128), (1, 2, 2), num_classes, in_channels, dropout)
