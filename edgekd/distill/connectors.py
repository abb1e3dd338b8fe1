"""Connectors: small trainable layers that map a student's taps onto the teacher's shapes.

They belong to the method that creates them (a submodule of the ``Method``), so they train with the
student, are saved in the trainer's checkpoint and are dropped before export. Each is sized from
the shapes of one probe batch (``Method.bind``):

- :class:`ConvBN`: 1x1 conv + BN, channel adapter for same-size maps (FSP with unequal widths);
- :class:`ConvReg`: FitNet's regressor, RepDistiller's ``ConvReg`` (conv-BN-ReLU that also fixes
  a factor-2 size difference);
- :class:`LinearEmbed`: a linear projection of the pooled vector (CC; RepDistiller's ``LinearEmbed``);
- :class:`Embed`: linear + L2 normalisation (CRD's projection head; RepDistiller's ``Embed``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.errors import EdgekdError


class ConvBN(nn.Sequential):
    """1x1 conv (no bias) + BatchNorm from ``c_in`` to ``c_out`` channels."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(nn.Conv2d(c_in, c_out, kernel_size=1, bias=False), nn.BatchNorm2d(c_out))


class ConvReg(nn.Module):
    """FitNet regressor from a student map (B, Cs, Hs, Ws) to a teacher map (B, Ct, Ht, Wt), as
    RepDistiller's ``ConvReg``: a 3x3 stride-2 conv if Hs = 2 Ht, a 4x4 stride-2 transposed conv
    if 2 Hs = Ht, otherwise a (1 + Hs - Ht) x (1 + Ws - Wt) conv; then BN and ReLU."""

    def __init__(self, s_shape: torch.Size | tuple[int, ...], t_shape: torch.Size | tuple[int, ...], use_relu=True):
        super().__init__()
        _, s_c, s_h, s_w = s_shape
        _, t_c, t_h, t_w = t_shape
        if s_h == 2 * t_h:
            self.conv: nn.Module = nn.Conv2d(s_c, t_c, kernel_size=3, stride=2, padding=1)
        elif s_h * 2 == t_h:
            self.conv = nn.ConvTranspose2d(s_c, t_c, kernel_size=4, stride=2, padding=1)
        elif s_h >= t_h and s_w >= t_w:
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=(1 + s_h - t_h, 1 + s_w - t_w))
        else:
            raise EdgekdError(
                f"fitnet: cannot map a {s_h}x{s_w} student map onto a {t_h}x{t_w} teacher map; "
                "choose taps of similar size (method param hint, or distill.taps.stages)"
            )
        self.bn = nn.BatchNorm2d(t_c)
        self.use_relu = use_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return F.relu(x) if self.use_relu else x


class LinearEmbed(nn.Module):
    """Flatten, then a linear layer to ``dim_out`` (RepDistiller's ``LinearEmbed``)."""

    def __init__(self, dim_in: int, dim_out: int = 128):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


class Embed(LinearEmbed):
    """Flatten, linear to ``dim_out``, L2-normalise (RepDistiller's CRD ``Embed``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(super().forward(x), p=2, dim=1)
