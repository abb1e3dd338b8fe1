"""Registry of distillation methods: config name -> ``Method`` subclass.

A method is a small ``nn.Module`` (it may own connectors whose parameters train with the student)
that declares the taps it reads (``taps``: ``logits``, ``embedding``, ``stages``, ``index``; see
``edgekd.distill.taps``), sizes its connectors in ``bind`` from one probe of both models, and
returns its loss terms by name. ``default_weight`` is the reference weight of the term (REFERENCES.md:
RepDistiller scripts / mdistiller configs) and ``ce_weight`` the CE weight the reference uses with it
alone. Adding a method is adding one file here that uses ``@register_method``, and importing it below.

How the trainer uses a method (``edgekd.distill.trainer``):

    student_taps, teacher_taps = bind_methods(methods, student, teacher, overrides, example, info)
    loss = ce_weight * CE + sum_i weight_i * sum(method_i(s_taps(x), t_taps(x), y, epoch).values())

``epoch`` is 0-based.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from edgekd.errors import EdgekdError

_METHODS: dict[str, type[Method]] = {}


@dataclass
class BindInfo:
    """What a method may need besides the probed taps: the training set's size and labels (CRD's
    memory bank and negative sampling)."""

    num_samples: int = 0
    labels: torch.Tensor | None = None  # int64 (N,), labels of the training split by dataset index


class Method(nn.Module):
    """Base class. ``forward(student_taps, teacher_taps, target, epoch) -> {term: loss}``."""

    name: ClassVar[str]
    taps: ClassVar[tuple[str, ...]] = ("logits",)
    default_weight: ClassVar[float] = 1.0  # the reference weight of this term
    ce_weight: ClassVar[float] = 1.0  # the CE weight the reference uses with this method alone
    kind: ClassVar[str] = "response"  # response | feature | relation | contrastive

    def bind(self, student: dict[str, Any], teacher: dict[str, Any], info: BindInfo) -> None:
        """Size connectors from the taps of one probe batch (eval mode, no grad). Default: none."""

    def forward(
        self,
        student: dict[str, Any],
        teacher: dict[str, Any],
        target: torch.Tensor,
        epoch: int,
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError


def register_method(name: str):
    def deco(cls: type[Method]) -> type[Method]:
        cls.name = name
        _METHODS[name] = cls
        return cls

    return deco


def method_names() -> list[str]:
    return sorted(_METHODS)


def method_class(name: str) -> type[Method]:
    if name not in _METHODS:
        raise EdgekdError(f"unknown distillation method {name!r}; choose one of {', '.join(method_names())}")
    return _METHODS[name]


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


def taps_needed(methods: Sequence[Method]) -> set[str]:
    return {t for m in methods for t in m.taps}


def bind_methods(
    methods: Sequence[Method],
    student: nn.Module,
    teacher: nn.Module | None,
    overrides: Any,
    example: torch.Tensor | None,
    info: BindInfo | None = None,
):
    """Install tap collectors on both models for the taps ``methods`` need, probe both once on
    ``example`` (eval mode, no grad: BN statistics unchanged) and let each method size its
    connectors. Returns ``(student_collector, teacher_collector)`` (the latter None without teacher)."""
    from edgekd.distill.taps import TapCollector

    names = taps_needed(methods)
    s_col = TapCollector(student, names, overrides, example, label="student")
    t_col = TapCollector(teacher, names, overrides, example, label="teacher") if teacher is not None else None
    if methods and t_col is not None:
        if example is None:
            raise ValueError("bind_methods needs an example batch to probe the models")
        s_probe, t_probe = s_col.probe(example), t_col.probe(example)
        for m in methods:
            m.bind(s_probe, t_probe, info or BindInfo())
    return s_col, t_col


# Registration: one file per method.
from edgekd.distill.methods import at as _at  # noqa: E402,F401
from edgekd.distill.methods import cc as _cc  # noqa: E402,F401
from edgekd.distill.methods import crd as _crd  # noqa: E402,F401
from edgekd.distill.methods import dkd as _dkd  # noqa: E402,F401
from edgekd.distill.methods import fitnet as _fitnet  # noqa: E402,F401
from edgekd.distill.methods import fsp as _fsp  # noqa: E402,F401
from edgekd.distill.methods import kd as _kd  # noqa: E402,F401
from edgekd.distill.methods import nst as _nst  # noqa: E402,F401
from edgekd.distill.methods import pkt as _pkt  # noqa: E402,F401
from edgekd.distill.methods import rkd as _rkd  # noqa: E402,F401
from edgekd.distill.methods import sp as _sp  # noqa: E402,F401
