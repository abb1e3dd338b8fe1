"""From raw dense maps to boxes: anchor points, DFL expectation, distance-to-box decoding.

For a location at grid cell (i, j) of a level with stride s, the anchor point is
``((j + 0.5) s, (i + 0.5) s)``. The box branch gives, per side, logits over ``R`` bins; the distance
is the expectation ``d = sum_k softmax(logits)_k * k`` in stride units (Li et al. 2020, GFL), and
the box is ``(x - l s, y - t s, x + r s, y + b s)``. Pure tensor code, no data-dependent branches,
so it runs inside the exported ONNX graph too.
"""

from __future__ import annotations

import torch


def flatten_levels(maps: list[torch.Tensor]) -> torch.Tensor:
    """``[B, K, H_l, W_l]`` per level -> ``[B, sum_l H_l W_l, K]`` (row-major over each level)."""
    return torch.cat([m.flatten(2).transpose(1, 2) for m in maps], dim=1)


def anchor_points(maps: list[torch.Tensor], strides: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor points ``[A, 2]`` (x, y in input pixels) and their strides ``[A, 1]``, same order as flatten_levels."""
    points, stride_col = [], []
    for m, s in zip(maps, strides, strict=True):
        h, w = m.shape[-2:]
        ys = (torch.arange(h, dtype=m.dtype, device=m.device) + 0.5) * s
        xs = (torch.arange(w, dtype=m.dtype, device=m.device) + 0.5) * s
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1))
        stride_col.append(torch.full((h * w, 1), float(s), dtype=m.dtype, device=m.device))
    return torch.cat(points), torch.cat(stride_col)


def dfl_distances(reg: torch.Tensor, reg_max: int) -> torch.Tensor:
    """``[B, A, 4R]`` bin logits -> ``[B, A, 4]`` expected distances in stride units."""
    b, a, _ = reg.shape
    prob = reg.reshape(b, a, 4, reg_max).softmax(dim=-1)
    bins = torch.arange(reg_max, dtype=reg.dtype, device=reg.device)
    return (prob * bins).sum(dim=-1)


def distance_to_box(points: torch.Tensor, ltrb: torch.Tensor) -> torch.Tensor:
    """Anchor points ``[A, 2]`` and distances ``[..., A, 4]`` (pixels) -> xyxy ``[..., A, 4]``."""
    return torch.cat([points - ltrb[..., :2], points + ltrb[..., 2:]], dim=-1)


def box_to_distance(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Inverse of ``distance_to_box``: xyxy ``[..., A, 4]`` -> ``(l, t, r, b)`` pixels from the points."""
    return torch.cat([points - boxes[..., :2], boxes[..., 2:] - points], dim=-1)


def decode(
    out: dict[str, list[torch.Tensor]], strides: tuple[int, ...], reg_max: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw ``{"cls", "reg"}`` maps -> (scores ``[B, A, C]`` after sigmoid, boxes ``[B, A, 4]`` xyxy pixels)."""
    points, stride_col = anchor_points(out["cls"], strides)
    dist = dfl_distances(flatten_levels(out["reg"]), reg_max) * stride_col
    return flatten_levels(out["cls"]).sigmoid(), distance_to_box(points, dist)
