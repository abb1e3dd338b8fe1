"""Detection knowledge distillation: methods by name, what applies to a pair, and the ``Distiller``.

Methods (formula and paper in each function's docstring, ``kd/response.py`` and ``kd/feature.py``):
response ``dense_kd``, ``bounded_reg``, ``ld``; feature ``mimic``, ``fgfi``, ``cwd``, ``pkd``;
``pseudo_label``. Combine them with weights: ``{"fgfi": 0.01, "pseudo_label": 1.0}``.

What applies to a (teacher, student) pair: the student is an edgekd edge detector (``edet_*``);
response methods need a teacher with the same kind of dense head (an ``edet_*`` with the same
classes; ``ld`` also the same DFL bins); feature methods need at least one teacher feature level
at the student's strides (8/16/32) with the same spatial size, and go through per-level adapters;
``pseudo_label`` works with any teacher. A method that cannot apply is refused with a one-line
``EdgekdError`` saying why and what does apply.
"""

from __future__ import annotations

import torch
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.tasks.detect.edge_detector import is_edge_detector
from edgekd.tasks.detect.kd.methods import METHODS, KDContext, PairInfo
from edgekd.tasks.detect.loss import dense_predictions
from edgekd.tasks.detect.models import describe

__all__ = ["METHODS", "Distiller", "applicable", "applicable_methods", "pair_info"]


@torch.no_grad()
def pair_info(teacher: nn.Module, student: nn.Module, imgsz: int) -> PairInfo:
    """Probe both models once with a zero batch: feature channels, strides and matched levels."""
    x = torch.zeros(1, 3, imgsz, imgsz)
    modes = teacher.training, student.training
    teacher.eval()
    student.eval()
    tf, sf = teacher.features(x), student.features(x)  # [] from a teacher program that exposes none
    teacher.train(modes[0])
    student.train(modes[1])
    t_strides = [imgsz / f.shape[-1] for f in tf]
    matched = []
    for si, f in enumerate(sf):
        stride = round(imgsz / f.shape[-1])
        for ti, g in enumerate(tf):
            if abs(t_strides[ti] - stride) < 1e-6 and g.shape[-2:] == f.shape[-2:]:
                matched.append((si, ti, stride))
                break
    return PairInfo(
        describe(teacher),
        describe(student),
        matched,
        [f.shape[1] for f in sf],
        [f.shape[1] for f in tf],
        [round(s, 2) for s in t_strides],
    )


def _reason(method: str, info: PairInfo, imgsz: int) -> str | None:
    kind = METHODS[method].kind
    t, s = info.teacher, info.student
    if s["family"] != "edet":
        return f"the student {s['name']} is not an edgekd edge detector (edet_*)"
    if kind == "response":
        if t["family"] != "edet":
            return (
                f"response methods need a teacher with the student's dense anchor-free DFL head (an edet_*), "
                f"and {t['name']} has a {t['head']} head"
            )
        if t["num_classes"] != s["num_classes"]:
            return f"the teacher predicts {t['num_classes']} classes, the student {s['num_classes']}"
        if method == "ld" and t["reg_max"] != s["reg_max"]:
            return f"the teacher's DFL has {t['reg_max']} bins, the student's {s['reg_max']}"
    if kind == "feature" and not t.get("features", True):
        return f"the teacher {t['name']} is a program that exposes no feature maps (only its outputs)"
    if kind == "feature" and not info.matched:
        return (
            f"the teacher's feature strides at imgsz {imgsz} are {info.teacher_strides}, none matches the "
            f"student's {s['strides']} with the same map size"
        )
    return None


def applicable_methods(info: PairInfo, imgsz: int) -> list[str]:
    return [m for m in METHODS if _reason(m, info, imgsz) is None]


def applicable(
    method: str, teacher: nn.Module, student: nn.Module, imgsz: int, info: PairInfo | None = None
) -> str | None:
    """``None`` when ``method`` can distil ``teacher`` into ``student``; else the one-line refusal."""
    if method not in METHODS:
        return f"unknown detection KD method {method!r}; choose from {', '.join(METHODS)}"
    info = info or pair_info(teacher, student, imgsz)
    why = _reason(method, info, imgsz)
    if why is None:
        return None
    ok = applicable_methods(info, imgsz)
    return (
        f"KD method {method!r} cannot distil {info.teacher['name']} into {info.student['name']}: {why}; "
        f"methods that apply to this pair: {', '.join(ok) if ok else 'none'}"
    )


class Distiller(nn.Module):
    """Weighted detection KD terms for a frozen teacher and a training edge student."""

    def __init__(
        self, teacher: nn.Module, student: nn.Module, methods: dict[str, float], imgsz: int, options: dict | None = None
    ):
        super().__init__()
        info = pair_info(teacher, student, imgsz)
        for name in methods:
            refusal = applicable(name, teacher, student, imgsz, info)
            if refusal:
                raise EdgekdError(refusal)
        self.teacher = [teacher.eval()]  # a list keeps it out of this module's parameters and state
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.info, self.weights = info, dict(methods)
        opts = options or {}
        self.methods = nn.ModuleDict({n: METHODS[n](info, **opts.get(n, {})) for n in methods})
        self.pseudo = {"conf": 0.5, "iou": 0.6, "max_det": 100, **opts.get("pseudo_label", {})}

    def forward(
        self,
        images: torch.Tensor,
        targets: list[dict[str, torch.Tensor]],
        student_out: dict,
        student_dense: dict,
        assignment,
    ) -> dict[str, torch.Tensor]:
        teacher = self.teacher[0]
        kinds = {m.kind for m in self.methods.values()}
        with torch.no_grad():
            if is_edge_detector(teacher):
                t_out = teacher(images)
                t_feats = t_out["feats"]
                t_dense = dense_predictions(t_out, teacher.strides, teacher.reg_max) if "response" in kinds else None
            else:
                t_feats = teacher.features(images) if "feature" in kinds else []
                t_dense = None
            pseudo = None
            if "pseudo" in kinds:
                from edgekd.tasks.detect.predict import detect_batch

                pseudo = [
                    {"boxes": d["boxes"], "labels": d["labels"]}
                    for d in detect_batch(
                        teacher, images, self.pseudo["conf"], self.pseudo["iou"], self.pseudo["max_det"]
                    )
                ]
        ctx = KDContext(
            images, targets, student_out["feats"], t_feats, student_dense, t_dense, assignment, student_out, pseudo
        )
        terms = {name: m(ctx) for name, m in self.methods.items()}
        terms["total"] = sum(self.weights[n] * v for n, v in terms.items())
        return terms
