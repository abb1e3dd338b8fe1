"""The search space as data: which choices exist for a given input, and sample -> arch spec.

A *layout* is a JSON-able dict fixed by the teacher and the data (classes, channels, image side)
and the search config (families): it lists every choice and its values. NNI's model space
(``nni_space.py``) declares one NNI mutable per choice label; a *sample* is NNI's dict from label
to chosen value; :func:`spec_from_sample` turns it into the arch spec of a ``nas_mbv`` or
``nas_resnet`` zoo model. Nothing here imports NNI.

Labels: ``family`` (when more than one family is searched), ``resolution``, ``mbv_width``,
``mbv_s{i}_depth``, ``mbv_s{i}_b{j}`` (block variant, e.g. ``k5_e4_se_hswish``),
``res_s{i}_width``, ``res_s{i}_depth``.

Base layouts by image side (small images keep their resolution through the stem, as CIFAR
networks do; large ones use an ImageNet-style stride-2 stem):

- side <= 16: mbv stages 16 s1 (1-2 blocks), 24 s2 (1-2), 40 s2 (1-2), no head conv; resnet 3 stages
  (strides 1, 2, 2, 1-2 blocks each);
- side <= 64: mbv stages 16 s1 (1-2), 24 s2 (1-3), 40 s2 (1-3), 80 s2 (1-3), 96 s1 (1-2), head 256;
  resnet 3 stages (1-3 blocks each);
- larger: a stride-2 stem; mbv stages 16 s1 (1), 24 s2 (1-3), 40 s2 (1-4), 80 s2 (1-4), 112 s1 (1-4),
  160 s2 (1-4), head 576; resnet with a stride-2 stem and max pool, 4 stages (1-2 blocks each).
"""

from __future__ import annotations

import itertools
from typing import Any

from edgekd.errors import EdgekdError
from edgekd.models.searchable import make_divisible

FAMILIES = ("mbv", "resnet")
KERNELS = (3, 5, 7)
EXPANDS = (2, 4, 6)
SE = (False, True)
ACTS = ("relu", "hswish")
WIDTH_MULTS = (0.5, 0.75, 1.0, 1.25)


def variant_name(kernel: int, expand: int, se: bool, act: str) -> str:
    return f"k{kernel}_e{expand}_{'se' if se else 'nose'}_{act}"


def block_variants() -> dict[str, dict[str, Any]]:
    """Every block variant of the MobileNet family by name (kernel x expansion x SE x activation)."""
    return {
        variant_name(k, e, s, a): {"kernel": k, "expand": e, "se": s, "act": a}
        for k, e, s, a in itertools.product(KERNELS, EXPANDS, SE, ACTS)
    }


MIN_REDUCED_SIDE = 32


def resolutions_for(side: int) -> list[int]:
    """Input sides worth trying: the data's own, and 3/4 and 5/8 of it when that stays >= 32 px.

    Images of 32 px or less (CIFAR, MNIST, digits) keep their side, as CIFAR networks do: there
    are no pixels to spare, and a short proxy misjudges the trade. Measured on CIFAR-10
    (``benchmarks/search_cifar10.py``): in each of the 4 pairs of candidates with the same widths, the
    24 px one led the 3-epoch KD proxy by 1.6 to 3.4 points over the 32 px one; the chosen 24 px
    student then lost full KD to resnet8 (60.00% against 62.00% top-1), and on the Jetson its resize
    is one more kernel, so it was slower than its 32 px twin (0.2030 against 0.1987 ms, modelled).
    Resolution search pays on ImageNet-sized inputs (MnasNet, EfficientNet, Once-for-All)."""
    sides = {side}
    for f in (0.75, 0.625):
        r = int(round(side * f / 4) * 4)
        if r >= MIN_REDUCED_SIDE:
            sides.add(r)
    return sorted(sides, reverse=True)


def make_layout(
    num_classes: int, input_shape: tuple[int, int, int], families: list[str] | tuple[str, ...] = FAMILIES
) -> dict[str, Any]:
    """The search space for a teacher's classes and input spec (see the module docstring)."""
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise EdgekdError(f"unknown search family {unknown}; choose from {', '.join(FAMILIES)}")
    channels, side = int(input_shape[0]), int(min(input_shape[1:]))
    if side <= 16:
        mbv_stages = [(16, 1, (1, 2)), (24, 2, (1, 2)), (40, 2, (1, 2))]
        mbv = {"stem": 16, "stem_stride": 1, "head": 0}
        res = {"stem": 16, "stem_stride": 1, "stem_pool": False}
        res_stages = [([8, 16, 24], 1, (1, 2)), ([16, 24, 32], 2, (1, 2)), ([32, 48, 64], 2, (1, 2))]
    elif side <= 64:
        mbv_stages = [(16, 1, (1, 2)), (24, 2, (1, 3)), (40, 2, (1, 3)), (80, 2, (1, 3)), (96, 1, (1, 2))]
        mbv = {"stem": 16, "stem_stride": 1, "head": 256}
        res = {"stem": 16, "stem_stride": 1, "stem_pool": False}
        res_stages = [([16, 24, 32], 1, (1, 3)), ([32, 48, 64], 2, (1, 3)), ([64, 96, 128], 2, (1, 3))]
    else:
        mbv_stages = [
            (16, 1, (1, 1)),
            (24, 2, (1, 3)),
            (40, 2, (1, 4)),
            (80, 2, (1, 4)),
            (112, 1, (1, 4)),
            (160, 2, (1, 4)),
        ]
        mbv = {"stem": 16, "stem_stride": 2, "head": 576}
        res = {"stem": 64, "stem_stride": 2, "stem_pool": True}
        res_stages = [
            ([32, 48, 64], 1, (1, 2)),
            ([64, 96, 128], 2, (1, 2)),
            ([128, 192, 256], 2, (1, 2)),
            ([256, 384, 512], 2, (1, 2)),
        ]
    mbv["widths"] = list(WIDTH_MULTS)
    mbv["stages"] = [{"base": b, "stride": s, "depth": list(d)} for b, s, d in mbv_stages]
    mbv["variants"] = sorted(block_variants())
    res["stages"] = [{"widths": w, "stride": s, "depth": list(d)} for w, s, d in res_stages]
    return {
        "num_classes": int(num_classes),
        "in_channels": channels,
        "side": side,
        "families": list(families),
        "resolutions": resolutions_for(side),
        "mbv": mbv,
        "resnet": res,
    }


def choices(layout: dict[str, Any]) -> dict[str, list[Any]]:
    """Every label and its values, in a stable order (what the NNI space declares)."""
    out: dict[str, list[Any]] = {}
    if len(layout["families"]) > 1:
        out["family"] = list(layout["families"])
    out["resolution"] = list(layout["resolutions"])
    if "mbv" in layout["families"]:
        m = layout["mbv"]
        out["mbv_width"] = list(m["widths"])
        for i, st in enumerate(m["stages"]):
            out[f"mbv_s{i}_depth"] = list(range(st["depth"][0], st["depth"][1] + 1))
            for j in range(st["depth"][1]):
                out[f"mbv_s{i}_b{j}"] = list(m["variants"])
    if "resnet" in layout["families"]:
        for i, st in enumerate(layout["resnet"]["stages"]):
            out[f"res_s{i}_width"] = list(st["widths"])
            out[f"res_s{i}_depth"] = list(range(st["depth"][0], st["depth"][1] + 1))
    return out


def _get(sample: dict[str, Any], label: str, values: list[Any]) -> Any:
    if label not in sample:
        raise EdgekdError(f"search sample lacks choice {label!r}")
    value = sample[label]
    if value not in values:
        raise EdgekdError(f"search sample has {label}={value!r}, not one of {values}")
    return value


def mbv_channels(layout: dict[str, Any], mult: float) -> tuple[int, list[int], int]:
    """(stem, stage widths, head) channels of the MobileNet family at width multiplier ``mult``."""
    m = layout["mbv"]
    return (
        make_divisible(m["stem"] * mult),
        [make_divisible(st["base"] * mult) for st in m["stages"]],
        make_divisible(m["head"] * max(mult, 1.0)),
    )


def spec_from_sample(layout: dict[str, Any], sample: dict[str, Any]) -> dict[str, Any]:
    """The zoo arch spec (``nas_mbv`` or ``nas_resnet``) of one NNI sample of ``layout``."""
    table = choices(layout)
    family = _get(sample, "family", table["family"]) if "family" in table else layout["families"][0]
    resolution = _get(sample, "resolution", table["resolution"])
    base = {
        "num_classes": layout["num_classes"],
        "in_channels": layout["in_channels"],
        "input_size": None if resolution == layout["side"] else resolution,
    }
    if family == "mbv":
        m = layout["mbv"]
        variants = block_variants()
        stem, widths, head = mbv_channels(layout, _get(sample, "mbv_width", table["mbv_width"]))
        stages = []
        for i, st in enumerate(m["stages"]):
            depth = _get(sample, f"mbv_s{i}_depth", table[f"mbv_s{i}_depth"])
            blocks = [dict(variants[_get(sample, f"mbv_s{i}_b{j}", table[f"mbv_s{i}_b{j}"])]) for j in range(depth)]
            stages.append({"width": widths[i], "stride": st["stride"], "blocks": blocks})
        return {
            "name": "nas_mbv",
            **base,
            "stem": stem,
            "stem_stride": m["stem_stride"],
            "head": head,
            "stages": stages,
        }
    r = layout["resnet"]
    stages = [
        {
            "width": _get(sample, f"res_s{i}_width", table[f"res_s{i}_width"]),
            "stride": st["stride"],
            "depth": _get(sample, f"res_s{i}_depth", table[f"res_s{i}_depth"]),
        }
        for i, st in enumerate(r["stages"])
    ]
    return {
        "name": "nas_resnet",
        **base,
        "stem": r["stem"],
        "stem_stride": r["stem_stride"],
        "stem_pool": r["stem_pool"],
        "stages": stages,
    }


def cheapest_sample(layout: dict[str, Any], family: str) -> dict[str, Any]:
    """The smallest architecture of ``family`` (first values are the cheapest, except resolution)."""
    table = choices(layout)
    cheap = variant_name(min(KERNELS), min(EXPANDS), False, "relu")
    sample = {
        label: (min(values) if label != "family" and not label.startswith("mbv_s") else values[0])
        for label, values in table.items()
    }
    for label in table:
        if label.startswith("mbv_s") and label.endswith("_depth"):
            sample[label] = min(table[label])
        elif label.startswith("mbv_s"):
            sample[label] = cheap
    if "family" in table:
        sample["family"] = family
    return sample
