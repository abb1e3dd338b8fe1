"""Registry of distillation methods: config name -> ``Method`` subclass.

A method is a small ``nn.Module`` (it may own connectors whose parameters train with the student)
that declares the taps it reads (``taps``: ``logits``, ``embedding``, ``stages``, ``index``; see
``edgekd.distill.taps``), sizes its connectors in ``bind`` from one probe of both models, and
returns its loss terms by name. ``default_weight`` is the reference weight of the term (REFERENCES.md:
RepDistiller scripts / mdistiller configs) and ``ce_weight`` the CE weight the reference uses with it
alone. Adding a method is adding one file here and one entry in ``METHODS`` below.

How the trainer uses a method (``edgekd.distill.trainer``):

    student_taps, teacher_taps = bind_methods(methods, student, teacher, overrides, example, info)
    loss = ce_weight * CE + sum_i weight_i * sum(method_i(s_taps(x), t_taps(x), y, epoch).values())

``epoch`` is 0-based.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edgekd.distill.methods.at import AT
from edgekd.distill.methods.base import BindInfo, Method, bind_methods, taps_needed
from edgekd.distill.methods.cc import CC
from edgekd.distill.methods.crd import CRD
from edgekd.distill.methods.dkd import DKD
from edgekd.distill.methods.fitnet import FitNet
from edgekd.distill.methods.fsp import FSP
from edgekd.distill.methods.kd import KD
from edgekd.distill.methods.nst import NST
from edgekd.distill.methods.pkt import PKT
from edgekd.distill.methods.rkd import RKD
from edgekd.distill.methods.sp import SP
from edgekd.errors import EdgekdError

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (AT, CC, CRD, DKD, FitNet, FSP, KD, NST, PKT, RKD, SP)}

__all__ = [
    "METHODS",
    "BindInfo",
    "Method",
    "bind_methods",
    "build_method",
    "default_ce_weight",
    "method_class",
    "method_names",
    "taps_needed",
]


def method_names() -> list[str]:
    return sorted(METHODS)


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise EdgekdError(f"unknown distillation method {name!r}; choose one of {', '.join(method_names())}")
    return METHODS[name]


def build_method(name: str, params: dict[str, Any] | None = None) -> Method:
    cls = method_class(name)
    try:
        return cls(**(params or {}))
    except TypeError as exc:
        raise EdgekdError(f"method {name!r}: bad parameters {params}: {exc}") from None


def default_ce_weight(names: Sequence[str]) -> float:
    """The CE weight the references use with these methods: with KD alone 0.1 (0.1 CE + 0.9 KD,
    RepDistiller/mdistiller), otherwise 1.0 (feature, relation and contrastive weights are
    published with CE weight 1, and combinations such as CRD+KD keep CE at 1); 1.0 with none."""
    names = list(names)
    if not names:
        return 1.0
    weights = {method_class(n).ce_weight for n in names}
    return min(weights) if len(names) == 1 else 1.0
