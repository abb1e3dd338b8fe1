"""What every scheme shares: the job it is given, what it hands back, the registry, and the
``TrainHook`` protocol through which schemes add loss terms to the shared training loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from edgekd.console import Reporter
from edgekd.data import DataBundle, Normalization
from edgekd.distill.config import DistillConfig
from edgekd.errors import EdgekdError


class TrainHook(nn.Module):
    """Adds loss terms to each training step of ``edgekd.distill.trainer.train``.

    ``attach`` is called once before training (install forward hooks, size heads by probing),
    ``terms`` once per step, ``detach`` after the last epoch. Parameters returned by
    ``trainable_parameters`` train with the student's optimizer; a hook with its own optimizer
    (the adversarial discriminator) returns none. ``needs_teacher`` asks the loop for teacher logits.
    """

    needs_teacher: ClassVar[bool] = False

    def attach(self, student: nn.Module, setup: Any) -> None:
        self.student = [student]  # in a list: not registered as a submodule (saved separately)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def terms(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        idx: torch.Tensor,
        logits: torch.Tensor,
        teacher_logits: torch.Tensor | None,
        epoch: int,
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def detach(self) -> None:
        pass


@dataclass
class SchemeJob:
    """Everything a scheme may use; built by the distill stage (or by tests and benchmarks)."""

    distill: DistillConfig
    data: DataBundle
    normalization: Normalization
    device: torch.device
    seed: int
    new_student: Callable[[], nn.Module]
    # (student, [(method, weight)], DistillConfig) -> TrainSetup with data, augmentation, teacher
    make_setup: Callable[..., Any]
    teacher: nn.Module | None = None
    teacher_sha256: str | None = None
    teacher_fn: Callable[..., torch.Tensor] | None = None  # replaces the teacher call (the cache)
    out_dir: Path | None = None  # where checkpoints and extra artifacts go (the stage's folder)
    resume: bool = False
    reporter: Reporter = field(default_factory=lambda: Reporter(quiet=True))
    augment: dict[str, Any] = field(default_factory=dict)
    label: str = "distill"


@dataclass
class SchemeOutcome:
    """The trained student, ``train``'s result dict, and scheme-specific metrics for metrics.json."""

    student: nn.Module
    result: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    extra_models: dict[str, nn.Module] = field(default_factory=dict)  # e.g. the TAKD assistant


class Scheme:
    name: ClassVar[str]
    uses_teacher: ClassVar[bool] = True  # False: the teacher is not consulted (guard and cache skip)

    def run(self, job: SchemeJob) -> SchemeOutcome:
        raise NotImplementedError

    def describe(self, job: SchemeJob) -> str:
        return self.name


_SCHEMES: dict[str, type[Scheme]] = {}


def register_scheme(name: str):
    def deco(cls: type[Scheme]) -> type[Scheme]:
        cls.name = name
        _SCHEMES[name] = cls
        return cls

    return deco


def scheme_names() -> list[str]:
    return sorted(_SCHEMES)


def build_scheme(name: str) -> Scheme:
    if name not in _SCHEMES:
        raise EdgekdError(f"unknown distillation scheme {name!r}; choose one of {', '.join(scheme_names())}")
    return _SCHEMES[name]()


def checkpoint(job: SchemeJob, name: str) -> Path | None:
    return None if job.out_dir is None else job.out_dir / name


def methods_of(job: SchemeJob, config: DistillConfig | None = None):
    from edgekd.distill.methods import build_method

    cfg = config or job.distill
    return [(build_method(m.name, m.params), m.weight) for m in cfg.methods]


def train_by_hooks(job: SchemeJob, student: nn.Module, hooks: list, **extra):
    """A training in which CE (weight 1) and ``hooks`` are the whole loss: no distillation method of
    ``distill.methods`` (the self-distillation schemes: BYOT, CS-KD, LwF)."""
    config = job.distill.model_copy(update={"ce_weight": 1.0, "methods": []})
    return train_with(job, student, config, [], hooks=hooks, **extra)


def train_with(
    job: SchemeJob,
    student: nn.Module,
    config: DistillConfig,
    methods,
    *,
    label: str | None = None,
    ckpt="last.ckpt",
    **extra,
):
    """The shared loop on ``job``'s data with ``extra`` TrainSetup fields (hooks, teacher_fn, ...)."""
    from edgekd.distill.trainer import train

    setup = job.make_setup(student, methods, config)
    for key, value in extra.items():
        setattr(setup, key, value)
    return train(
        setup,
        checkpoint_path=checkpoint(job, ckpt),
        resume=job.resume,
        reporter=job.reporter,
        label=label or job.label,
    )
