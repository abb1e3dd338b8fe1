"""Registry of distillation methods: config name -> ``Method`` subclass.

A method is a small ``nn.Module`` (it may own connectors whose parameters train with the student)
that declares the taps it reads and returns its loss terms by name. Adding a method is adding one
file here that uses ``@register_method``, and importing it below.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from edgekd.errors import EdgekdError

_METHODS: dict[str, type[Method]] = {}


class Method(nn.Module):
    """Base class. ``forward(student_taps, teacher_taps, target, epoch) -> {term: loss}``."""

    name: ClassVar[str]
    taps: ClassVar[tuple[str, ...]] = ("logits",)

    def forward(
        self,
        student: dict[str, torch.Tensor],
        teacher: dict[str, torch.Tensor],
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


def build_method(name: str, params: dict[str, Any] | None = None) -> Method:
    if name not in _METHODS:
        raise EdgekdError(f"unknown distillation method {name!r}; choose one of {', '.join(method_names())}")
    try:
        return _METHODS[name](**(params or {}))
    except TypeError as exc:
        raise EdgekdError(f"method {name!r}: bad parameters {params}: {exc}") from None


from edgekd.distill.methods import kd as _kd  # noqa: E402,F401  (registration)
