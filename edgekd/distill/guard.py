"""Teacher quality guard: do not distil from a teacher that is no better than the student alone.

Distilling from such a teacher makes the student worse (issue 3, section 5: on 10,000 CIFAR-10
images, a resnet56 teacher at 67.2% distilled into a resnet20 that reaches 71.5% alone gave
66.9%, a loss of 4.6 points). Before distilling, the distill stage compares the teacher's
validation top-1 with the student-alone top-1: the ``--baseline`` run when there is one (trained
first, at the full budget), else a short probe (the same student, CE only, ``probe_epochs``).

The teacher is *clearly better* when ``teacher >= student + margin``. Otherwise the verdict is
said in the output and the report, and with ``mode: auto`` the run moves to a safer setting:

- ``tfkd`` (the default when the teacher is worse than the student by more than the margin):
  teacher-free virtual-teacher regularisation (Yuan et al. 2020) — the teacher is not used;
- ``lower_kd`` (the default when the two are within the margin): CE weight 1 and every method's
  weight times 0.25, so the labels dominate;
- ``dkd``: decoupled KD (Zhao et al. 2022), which separates the target-class term from the
  non-target one, when the methods library provides it.

``mode: warn`` only says so; ``off`` skips the comparison. The decision is recorded in the
metrics (``guard``) and report.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from edgekd.distill.config import DistillConfig, MethodConfig

LOWER_KD_SCALE = 0.25


@dataclass
class GuardDecision:
    teacher_top1: float
    student_top1: float
    student_source: str  # "baseline (N epochs)" or "probe (N epochs)"
    margin: float
    clearly_better: bool
    verdict: str  # one line for the output and the report
    action: str  # "none", "warn", "lower_kd", "dkd", "tfkd"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    teacher_top1: float,
    student_top1: float,
    source: str,
    *,
    mode: str = "auto",
    margin: float = 0.01,
    fallback: str = "auto",
    dkd_available: bool = False,
) -> GuardDecision:
    gap = teacher_top1 - student_top1
    clearly = gap >= margin
    if clearly:
        verdict = (
            f"teacher {100 * teacher_top1:.2f}% is clearly better than the student alone "
            f"{100 * student_top1:.2f}% ({source}); distilling as configured"
        )
        return GuardDecision(teacher_top1, student_top1, source, margin, True, verdict, "none")
    if fallback == "auto":
        action = "tfkd" if gap < -margin else "lower_kd"
    elif fallback == "dkd" and not dkd_available:
        action = "lower_kd"
    else:
        action = fallback
    how = {
        "tfkd": "teacher-free regularisation (Tf-KD, the teacher is not used)",
        "lower_kd": f"a lower KD weight (CE 1, methods x{LOWER_KD_SCALE:g})",
        "dkd": "decoupled KD (DKD)",
    }[action]
    if mode != "auto":
        action = "warn"
    verdict = (
        f"teacher {100 * teacher_top1:.2f}% is not clearly better than the student alone {100 * student_top1:.2f}% "
        f"({source}; margin {100 * margin:g} points): distilling from it may make the student worse; "
        + (
            f"switching to {how} (distill.guard.mode=warn keeps the configured methods)"
            if mode == "auto"
            else f"keeping the configured methods because distill.guard.mode={mode} (auto would use {how})"
        )
    )
    return GuardDecision(teacher_top1, student_top1, source, margin, False, verdict, action)


def apply(decision: GuardDecision, config: DistillConfig) -> DistillConfig:
    """The distill settings after the guard's action (unchanged for none/warn)."""
    if decision.action == "tfkd":
        return config.model_copy(update={"scheme": "tfkd"})
    if decision.action == "lower_kd":
        methods = [m.model_copy(update={"weight": m.weight * LOWER_KD_SCALE}) for m in config.methods]
        return config.model_copy(update={"ce_weight": 1.0, "methods": methods})
    if decision.action == "dkd":
        return config.model_copy(
            update={
                "ce_weight": 1.0,
                "methods": [MethodConfig(name="dkd", weight=1.0, params={"alpha": 1.0, "beta": 8.0, "T": 4.0})],
            }
        )
    return config


def probe_epochs(config: DistillConfig) -> int:
    return config.guard.probe_epochs or max(1, config.epochs // 5)
