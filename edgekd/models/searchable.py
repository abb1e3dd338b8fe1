"""The two searchable student families as plain zoo models: ``nas_mbv`` and ``nas_resnet``.

The NAS stage samples architectures from NNI model spaces (``edgekd/nas/nni_space.py``); each
sample is written down as an arch spec that these factories build without NNI, so
``search/best_arch.json`` rebuilds through ``create_model`` on any machine.

``nas_mbv`` is a MobileNetV2/V3-style network (Sandler et al. 2018; Howard et al. 2019): a 3x3
stem, stages of inverted-residual blocks (1x1 expand, kxk depthwise, optional squeeze-excitation,
1x1 linear projection; residual when shapes allow), a 1x1 head, global pooling, a linear
classifier. Each block has its own kernel (3/5/7), expansion ratio, SE on/off and activation
(ReLU or Hardswish)::

    {"name": "nas_mbv", "stem": 16, "stem_stride": 1, "head": 128, "input_size": 8,
     "stages": [{"width": 16, "stride": 1,
                 "blocks": [{"kernel": 3, "expand": 4, "se": false, "act": "relu"}, ...]}, ...]}

``nas_resnet`` is a ResNet-style network (He et al. 2016) of basic blocks: a width and a number
of blocks per stage::

    {"name": "nas_resnet", "stem": 16, "stem_stride": 1, "stem_pool": false, "input_size": 32,
     "stages": [{"width": 32, "stride": 1, "depth": 2}, ...]}

``input_size`` (optional) resizes the input to that side first (bilinear), which is how the
search trades input resolution for latency while the teacher's input spec stays fixed.

The NNI spaces build these same classes, passing their stages in (``stage_modules``) as NNI
``Repeat``/``LayerChoice`` modules; frozen, those become plain ``nn.Sequential`` stages of the
same blocks, so a frozen NNI sample and ``create_model(spec)`` have identical state_dict layouts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.models.registry import register_model

ACTIVATIONS = {"relu": nn.ReLU, "hswish": nn.Hardswish}


def make_divisible(value: float, divisor: int = 8, minimum: int | None = None) -> int:
    """Round channels to a multiple of ``divisor``, never more than 10% below ``value`` (MobileNet rule)."""
    minimum = minimum or divisor
    out = max(minimum, int(value + divisor / 2) // divisor * divisor)
    if out < 0.9 * value:
        out += divisor
    return out


def _act(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise EdgekdError(f"unknown activation {name!r} in arch spec; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class SqueezeExcite(nn.Module):
    """Channel attention: pool, 1x1 reduce (ReLU), 1x1 expand, hard sigmoid gate (MobileNetV3)."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = make_divisible(channels / reduction, 8)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.expand = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * F.hardsigmoid(self.expand(F.relu(self.reduce(s))))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> kxk depthwise -> [SE] -> 1x1 linear projection."""

    def __init__(self, inp: int, oup: int, stride: int, kernel: int, expand: int, se: bool, act: str):
        super().__init__()
        if kernel not in (3, 5, 7) or stride not in (1, 2) or expand < 1:
            raise EdgekdError(f"bad MBConv block (kernel {kernel}, stride {stride}, expand {expand}) in arch spec")
        hidden = inp * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(inp, hidden, 1, bias=False), nn.BatchNorm2d(hidden), _act(act)]
        layers += [
            nn.Conv2d(hidden, hidden, kernel, stride, kernel // 2, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            _act(act),
        ]
        if se:
            layers.append(SqueezeExcite(hidden))
        layers += [nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and inp == oup

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class ResBlock(nn.Module):
    """Basic residual block: two 3x3 conv-BN, ReLU; a 1x1 conv-BN shortcut when shapes change."""

    def __init__(self, inp: int, oup: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, oup, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(oup)
        self.conv2 = nn.Conv2d(oup, oup, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(oup)
        self.shortcut = (
            nn.Sequential(nn.Conv2d(inp, oup, 1, stride, bias=False), nn.BatchNorm2d(oup))
            if stride != 1 or inp != oup
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def conv_bn_act(inp: int, oup: int, kernel: int, stride: int, act: str = "relu") -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(oup), _act(act))


class _Resized(nn.Module):
    """Base: resize the input to ``input_size`` (when set and different), run ``features``, classify."""

    input_size: int | None

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_size and (x.shape[-1] != self.input_size or x.shape[-2] != self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return x


def _stage_list(stages: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(stages, list | tuple) or not stages or not all(isinstance(s, dict) for s in stages):
        raise EdgekdError(f"{what} arch spec needs 'stages': a non-empty list of stage dicts")
    return list(stages)


class NasMobileNet(_Resized):
    """MobileNetV2/V3-style network built from an arch spec (see the module docstring)."""

    def __init__(
        self,
        stages: Sequence[dict[str, Any]],
        num_classes: int = 10,
        in_channels: int = 3,
        stem: int = 16,
        stem_stride: int = 1,
        head: int = 0,
        input_size: int | None = None,
        act: str = "hswish",
        dropout: float = 0.0,
        stage_modules: Sequence[nn.Module] | None = None,
    ):
        super().__init__()
        stages = _stage_list(stages, "nas_mbv")
        self.input_size = input_size
        self.stem = conv_bn_act(in_channels, stem, 3, stem_stride, act)
        if stage_modules is None:
            built, inp = [], stem
            for st in stages:
                blocks = []
                for i, b in enumerate(st["blocks"]):
                    blocks.append(
                        MBConv(
                            inp if i == 0 else st["width"],
                            st["width"],
                            st["stride"] if i == 0 else 1,
                            int(b["kernel"]),
                            int(b["expand"]),
                            bool(b["se"]),
                            b["act"],
                        )
                    )
                built.append(nn.Sequential(*blocks))
                inp = st["width"]
            stage_modules = built
        self.stages = nn.Sequential(*stage_modules)
        last = stages[-1]["width"]
        self.head = conv_bn_act(last, head, 1, 1, act) if head else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.classifier = nn.Linear(head or last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.stages(self.stem(self._resize(x))))
        return self.classifier(self.dropout(torch.flatten(self.pool(x), 1)))


class NasResNet(_Resized):
    """ResNet-style network of basic blocks built from an arch spec (see the module docstring)."""

    def __init__(
        self,
        stages: Sequence[dict[str, Any]],
        num_classes: int = 10,
        in_channels: int = 3,
        stem: int = 16,
        stem_stride: int = 1,
        stem_pool: bool = False,
        input_size: int | None = None,
        stage_modules: Sequence[nn.Module] | None = None,
    ):
        super().__init__()
        stages = _stage_list(stages, "nas_resnet")
        self.input_size = input_size
        self.stem = nn.Sequential(
            *conv_bn_act(in_channels, stem, 3, stem_stride),
            *([nn.MaxPool2d(3, 2, 1)] if stem_pool else []),
        )
        if stage_modules is None:
            built, inp = [], stem
            for st in stages:
                depth = int(st["depth"])
                if depth < 1:
                    raise EdgekdError(f"nas_resnet stage depth must be >= 1, got {depth}")
                built.append(
                    nn.Sequential(
                        *[
                            ResBlock(inp if i == 0 else st["width"], st["width"], st["stride"] if i == 0 else 1)
                            for i in range(depth)
                        ]
                    )
                )
                inp = st["width"]
            stage_modules = built
        self.stages = nn.Sequential(*stage_modules)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(stages[-1]["width"], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(self._resize(x)))
        return self.classifier(torch.flatten(self.pool(x), 1))


@register_model("nas_mbv")
def nas_mbv(num_classes: int = 10, in_channels: int = 3, **spec: Any) -> nn.Module:
    """A MobileNetV2/V3-style student found by the search (or written by hand)."""
    return NasMobileNet(num_classes=num_classes, in_channels=in_channels, **_known(spec, NasMobileNet))


@register_model("nas_resnet")
def nas_resnet(num_classes: int = 10, in_channels: int = 3, **spec: Any) -> nn.Module:
    """A ResNet-style student found by the search (or written by hand)."""
    return NasResNet(num_classes=num_classes, in_channels=in_channels, **_known(spec, NasResNet))


# The architecture a bare name builds (``create_model("nas_mbv")``, ``edgekd models``): a small
# 3-stage member of each family, so the names work like every other zoo name. The search writes
# its own ``stages``.
DEFAULT_STAGES = {
    NasMobileNet: [
        {"width": 16, "stride": 1, "blocks": [{"kernel": 3, "expand": 4, "se": False, "act": "relu"}]},
        {"width": 24, "stride": 2, "blocks": [{"kernel": 3, "expand": 4, "se": False, "act": "relu"}] * 2},
        {"width": 40, "stride": 2, "blocks": [{"kernel": 5, "expand": 4, "se": True, "act": "hswish"}] * 2},
    ],
    NasResNet: [
        {"width": 16, "stride": 1, "depth": 1},
        {"width": 32, "stride": 2, "depth": 1},
        {"width": 64, "stride": 2, "depth": 1},
    ],
}


def _known(spec: dict[str, Any], cls: type) -> dict[str, Any]:
    import inspect

    allowed = set(inspect.signature(cls.__init__).parameters) - {"self", "num_classes", "in_channels", "stage_modules"}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise EdgekdError(f"arch spec has unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    return {"stages": DEFAULT_STAGES[cls], **spec}
