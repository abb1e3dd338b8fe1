"""What a distillation method is (``Method``), and how the trainer binds methods to two models.

A method is a small ``nn.Module`` (it may own connectors whose parameters train with the student)
that declares the taps it reads (``taps``: ``logits``, ``embedding``, ``stages``, ``index``; see
``edgekd.distill.taps``), sizes its connectors in ``bind`` from one probe of both models, and
returns its loss terms by name. ``default_weight`` is the reference weight of the term (REFERENCES.md:
RepDistiller scripts / mdistiller configs) and ``ce_weight`` the CE weight the reference uses with it
alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn


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
