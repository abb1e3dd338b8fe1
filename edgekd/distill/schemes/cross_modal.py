"""Cross-modal distillation: teacher and student see different views of the same sample.

Paired transforms on each (already augmented) batch: the teacher gets ``teacher_view(x)``, the
student ``student_view(x)``, so the student learns to predict from the view it will have at
deployment what the teacher predicts from the richer one (Gupta, Hoffman, Malik, CVPR 2016,
"Cross Modal Distillation for Supervision Transfer", transfer across paired modalities). Views:

- ``identity``;
- ``grayscale``: ITU-R BT.601 luma (0.299 R + 0.587 G + 0.114 B) replicated over the channels, so the
  student's input shape stays the same (a colour teacher -> a grayscale-camera student);
- ``lowres:N``: bilinear down to N x N and back up to the input size (a low-resolution sensor).

Views work in pixel units: each batch is un-normalised, transformed and normalised again. The
student is validated on its own view; the saved student.pt is the plain student (record of the view
in the metrics: feed it the same view at deployment).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgekd.data import Normalization
from edgekd.distill.schemes.base import Scheme, SchemeJob, SchemeOutcome, methods_of, register_scheme, train_with
from edgekd.errors import EdgekdError

LUMA = (0.299, 0.587, 0.114)


class View:
    """A paired transform on normalised batches (see the module docstring for the names)."""

    def __init__(self, spec: str, norm: Normalization):
        self.spec = spec
        kind, _, arg = spec.partition(":")
        c = len(norm.mean)
        self.mean = torch.tensor(norm.mean).view(1, c, 1, 1)
        self.std = torch.tensor(norm.std).view(1, c, 1, 1)
        if kind == "identity" and not arg:
            self.fn = None
        elif kind == "grayscale" and not arg:
            if c not in (1, 3):
                raise EdgekdError(f"view {spec!r} needs 1- or 3-channel images, not {c}; choose another view")
            self.fn = self._gray
        elif kind == "lowres" and arg.isdigit() and int(arg) >= 1:
            self.size = int(arg)
            self.fn = self._lowres
        else:
            raise EdgekdError(f"unknown view {spec!r}; use identity, grayscale or lowres:N (e.g. lowres:16)")

    def _gray(self, px: torch.Tensor) -> torch.Tensor:
        if px.shape[1] == 1:
            return px
        w = torch.tensor(LUMA, device=px.device).view(1, 3, 1, 1)
        return (px * w).sum(1, keepdim=True).expand_as(px)

    def _lowres(self, px: torch.Tensor) -> torch.Tensor:
        h, w = px.shape[2:]
        small = F.interpolate(px, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.fn is None:
            return x
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        return (self.fn(x * std + mean).clamp(0, 1) - mean) / std


class ViewedTeacher(torch.nn.Module):
    """``teacher_fn``: the teacher (or the cache in front of it) on the teacher's view."""

    def __init__(self, teacher, view: View, inner=None):
        super().__init__()
        self.teacher, self.view, self.inner = teacher, view, inner

    def forward(self, x, y, idx=None, epoch=0):
        x = self.view(x)
        return self.inner(x, y, idx, epoch) if self.inner is not None else self.teacher(x)


@register_scheme("cross_modal")
class CrossModal(Scheme):
    def run(self, job: SchemeJob) -> SchemeOutcome:
        c = job.distill.cross_modal
        t_view, s_view = View(c.teacher_view, job.normalization), View(c.student_view, job.normalization)
        student = job.new_student()
        fn = ViewedTeacher(job.teacher, t_view)  # the cache is keyed on raw inputs: not used here
        result = train_with(job, student, job.distill, methods_of(job), teacher_fn=fn, student_view=s_view)
        return SchemeOutcome(student, result, {"cross_modal": c.model_dump()})
