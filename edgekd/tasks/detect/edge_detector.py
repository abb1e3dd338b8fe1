"""edgekd's own edge detector (``edet_*``): single-stage, anchor-free, decoupled head at strides 8/16/32.

Besides the named sizes (``SIZES``), any point of the search space (edgekd/tasks/detect/search_space.py)
is a name: ``edet_c16_w32-64-128-256_d1-2-2-1_n64_h64`` is stem width 16, stage widths 32/64/128/256
(strides 4/8/16/32), CSP depths 1/2/2/1, neck width 64 and head width 64 (:func:`arch_from_name`).

Layout (the common shape of FCOS, YOLOX and YOLOv8-class detectors, written here from the papers):
a small CSP backbone (Wang et al. 2020, CSPNet) giving C3/C4/C5, a PAN neck (Liu et al. 2018,
top-down then bottom-up fusion) giving P3/P4/P5 of one width, and a decoupled head (Ge et al.
2021, YOLOX) with a class branch (sigmoid logits) and a box branch predicting, for each of the four
distances left/top/right/bottom, a distribution over ``reg_max`` bins (Li et al. 2020, GFL/DFL).

``forward`` returns the raw per-level maps ``{"feats", "cls", "reg"}`` and has no data-dependent
Python control flow, so it traces and exports as is; ``decode`` turns the maps into per-location
scores and xyxy boxes in input pixels (see ``edgekd.tasks.detect.decode``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import nn

STRIDES = (8, 16, 32)

# name -> (stem width, stage widths for strides 4/8/16/32, CSP depth per stage, neck/head width)
SIZES: dict[str, tuple[int, tuple[int, int, int, int], tuple[int, int, int, int], int]] = {
    "edet_p": (8, (16, 32, 64, 96), (1, 1, 1, 1), 32),
    "edet_n": (16, (32, 64, 128, 256), (1, 2, 2, 1), 64),
    "edet_s": (32, (64, 128, 256, 512), (1, 2, 2, 1), 128),
}


SPEC_PATTERN = re.compile(r"edet_c(\d+)_w(\d+(?:-\d+){3})_d(\d+(?:-\d+){3})_n(\d+)_h(\d+)")


@dataclass(frozen=True)
class EdetArch:
    """One edge detector's shape: stem, stage widths and CSP depths (strides 4/8/16/32), neck and head widths."""

    stem: int
    widths: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    neck: int
    head: int

    @property
    def name(self) -> str:
        return (
            f"edet_c{self.stem}_w{'-'.join(map(str, self.widths))}_d{'-'.join(map(str, self.depths))}"
            f"_n{self.neck}_h{self.head}"
        )


def arch_from_name(name: str) -> EdetArch | None:
    """The shape of ``edet_p/n/s`` or of a spec name (``edet_c16_w32-64-128-256_d1-2-2-1_n64_h64``); None
    for any other name. Widths must be even (a CSP block splits them in two) and depths at least 1."""
    if name in SIZES:
        stem, widths, depths, c = SIZES[name]
        return EdetArch(stem, widths, depths, c, c)
    m = SPEC_PATTERN.fullmatch(name)
    if m is None:
        return None
    widths = tuple(int(v) for v in m.group(2).split("-"))
    depths = tuple(int(v) for v in m.group(3).split("-"))
    arch = EdetArch(int(m.group(1)), widths, depths, int(m.group(4)), int(m.group(5)))  # type: ignore[arg-type]
    if min(arch.stem, arch.neck, arch.head, *widths) < 2 or min(depths) < 1 or any(w % 2 for w in (*widths, arch.neck)):
        return None
    return arch


class ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3, s: int = 1):
        super().__init__(nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout), nn.SiLU(inplace=True))


class Bottleneck(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.a, self.b = ConvBNAct(c, c, 3), ConvBNAct(c, c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b(self.a(x))


class CSPBlock(nn.Module):
    """Cross-stage partial block: half the channels go through ``n`` bottlenecks, then both halves merge."""

    def __init__(self, cin: int, cout: int, n: int = 1):
        super().__init__()
        h = cout // 2
        self.main, self.skip = ConvBNAct(cin, h, 1), ConvBNAct(cin, h, 1)
        self.blocks = nn.Sequential(*[Bottleneck(h) for _ in range(n)])
        self.fuse = ConvBNAct(2 * h, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([self.blocks(self.main(x)), self.skip(x)], dim=1))


class Backbone(nn.Module):
    def __init__(self, stem: int, widths: tuple[int, ...], depths: tuple[int, ...]):
        super().__init__()
        self.stem = ConvBNAct(3, stem, 3, 2)
        stages, cin = [], stem
        for w, d in zip(widths, depths, strict=True):
            stages.append(nn.Sequential(ConvBNAct(cin, w, 3, 2), CSPBlock(w, w, d)))
            cin = w
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs[1:]  # strides 8, 16, 32


class PANNeck(nn.Module):
    def __init__(self, widths: tuple[int, int, int], c: int):
        super().__init__()
        self.lat = nn.ModuleList([ConvBNAct(w, c, 1) for w in widths])
        self.up = nn.Upsample(scale_factor=2.0, mode="nearest")
        self.td4, self.td3 = CSPBlock(2 * c, c), CSPBlock(2 * c, c)
        self.down3, self.down4 = ConvBNAct(c, c, 3, 2), ConvBNAct(c, c, 3, 2)
        self.bu4, self.bu5 = CSPBlock(2 * c, c), CSPBlock(2 * c, c)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        c3, c4, c5 = (lat(f) for lat, f in zip(self.lat, feats, strict=True))
        t4 = self.td4(torch.cat([self.up(c5), c4], 1))
        p3 = self.td3(torch.cat([self.up(t4), c3], 1))
        p4 = self.bu4(torch.cat([self.down3(p3), t4], 1))
        p5 = self.bu5(torch.cat([self.down4(p4), c5], 1))
        return [p3, p4, p5]


class DecoupledHead(nn.Module):
    def __init__(
        self, c: int, num_classes: int, reg_max: int, levels: int = 3, prior: float = 0.01, hidden: int | None = None
    ):
        super().__init__()
        h = hidden or c

        def branch(out: int) -> nn.Sequential:
            return nn.Sequential(ConvBNAct(c, h), ConvBNAct(h, h), nn.Conv2d(h, out, 1))

        self.cls = nn.ModuleList([branch(num_classes) for _ in range(levels)])
        self.reg = nn.ModuleList([branch(4 * reg_max) for _ in range(levels)])
        for branch in self.cls:  # focal-loss prior (Lin et al. 2017): start every location at p = 0.01
            nn.init.constant_(branch[-1].bias, -math.log((1 - prior) / prior))
        for branch in self.reg:
            nn.init.zeros_(branch[-1].bias)

    def forward(self, feats: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return (
            [m(f) for m, f in zip(self.cls, feats, strict=True)],
            [m(f) for m, f in zip(self.reg, feats, strict=True)],
        )


class EdgeDetector(nn.Module):
    """Backbone + PAN neck + decoupled DFL head; ``forward(x) -> {"feats", "cls", "reg"}`` (lists of 3 maps)."""

    family = "edet"
    strides = STRIDES

    def __init__(self, name: str, num_classes: int, reg_max: int = 16):
        super().__init__()
        arch = arch_from_name(name)
        if arch is None:
            raise ValueError(f"{name!r} is not an edge detector name (edet_p/n/s or a search-space spec name)")
        self.name, self.num_classes, self.reg_max = name, num_classes, reg_max
        self.backbone = Backbone(arch.stem, arch.widths, arch.depths)
        self.neck = PANNeck(arch.widths[1:], arch.neck)
        self.head = DecoupledHead(arch.neck, num_classes, reg_max, hidden=arch.head)
        self.feature_channels = [arch.neck] * 3

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.neck(self.backbone(x))

    def forward(self, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        feats = self.features(x)
        cls, reg = self.head(feats)
        return {"feats": feats, "cls": cls, "reg": reg}

    def spec(self) -> dict:
        return {"arch": self.name, "num_classes": self.num_classes, "reg_max": self.reg_max}


def is_edge_detector(model: nn.Module) -> bool:
    """True for an edgekd dense detector: an :class:`EdgeDetector`, or a module that behaves as one
    (``family == "edet"``, ``strides``, ``reg_max``, ``forward -> {"feats", "cls", "reg"}``), such
    as its INT8 fake-quant copy (``edgekd.tasks.detect.quantize.QuantizedDetector``)."""
    return getattr(model, "family", None) == "edet"
