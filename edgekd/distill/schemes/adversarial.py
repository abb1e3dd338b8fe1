"""Adversarial distillation: a discriminator tells the teacher's outputs from the student's, and the
student learns to fool it, on top of the configured KD methods.

Follows Xu, Hsu, Huang, "Training Shallow and Thin Networks for Acceleration via Knowledge
Distillation with Conditional Adversarial Networks" (ICLR-W 2018): the discriminator is an MLP on
the networks' logits, conditioned on the label (one-hot concatenated, as in a conditional GAN); it
is trained with its own optimizer (Adam) on binary cross-entropy, teacher = real, student = fake,
and the student adds ``weight * BCE(D(student), real)``. ``on: embedding`` uses the penultimate
embeddings instead (the input of each model's last linear layer; a linear connector, trained with
the student, maps the student's embedding to the teacher's width).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.distill.schemes.base import (
    Scheme,
    SchemeJob,
    SchemeOutcome,
    TrainHook,
    methods_of,
    register_scheme,
    train_with,
)
from edgekd.distill.schemes.probe import Capture, last_linear


class Discriminator(nn.Module):
    def __init__(self, in_features: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).squeeze(1)


class AdversarialHook(TrainHook):
    needs_teacher = True

    def __init__(
        self,
        teacher: nn.Module,
        num_classes: int,
        input_shape,
        on: str = "logits",
        weight: float = 0.1,
        lr: float = 2e-4,
        hidden: int = 128,
        conditional: bool = True,
    ):
        super().__init__()
        self.teacher_ref = [teacher]
        self.num_classes, self.input_shape = num_classes, tuple(input_shape)
        self.on, self.weight, self.lr, self.hidden, self.conditional = on, weight, lr, hidden, conditional
        self.connector: nn.Module = nn.Identity()
        self.disc: Discriminator | None = None

    def build(self, student: nn.Module) -> None:
        device = next(student.parameters()).device
        teacher = self.teacher_ref[0]
        if self.on == "embedding":
            s_name, s_lin = last_linear(student)
            t_name, t_lin = last_linear(teacher)
            self.names = (s_name, t_name)
            width = t_lin.in_features
            if s_lin.in_features != width:
                self.connector = nn.Linear(s_lin.in_features, width).to(device)
        else:
            width = self.num_classes
        self.disc = Discriminator(width + (self.num_classes if self.conditional else 0), self.hidden).to(device)
        self.opt = torch.optim.Adam(self.disc.parameters(), lr=self.lr, betas=(0.5, 0.999))

    def attach(self, student, setup) -> None:
        super().attach(student, setup)
        if self.disc is None:
            self.build(student)
        if self.on == "embedding":
            self.s_cap = Capture(student, [self.names[0]], inputs=True)
            self.t_cap = Capture(self.teacher_ref[0], [self.names[1]], inputs=True)

    def trainable_parameters(self):
        return list(self.connector.parameters())  # the discriminator has its own optimizer

    def _in(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.cat([z, F.one_hot(y, self.num_classes).to(z.dtype)], 1) if self.conditional else z

    def terms(self, x, y, idx, logits, teacher_logits, epoch):
        if self.on == "embedding":
            s = self.connector(torch.flatten(self.s_cap.out[self.names[0]], 1))
            t = torch.flatten(self.t_cap.out[self.names[1]], 1).detach()
        else:
            s, t = logits, teacher_logits.detach()
        assert self.disc is not None
        real, fake = self.disc(self._in(t, y)), self.disc(self._in(s.detach(), y))
        d_loss = F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) + F.binary_cross_entropy_with_logits(
            fake, torch.zeros_like(fake)
        )
        self.opt.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt.step()
        self.last_d_loss = float(d_loss.detach())
        g = self.disc(self._in(s, y))
        return {"adv": self.weight * F.binary_cross_entropy_with_logits(g, torch.ones_like(g))}

    def detach(self) -> None:
        if self.on == "embedding":
            self.s_cap.remove()
            self.t_cap.remove()


@register_scheme("adversarial")
class Adversarial(Scheme):
    def run(self, job: SchemeJob) -> SchemeOutcome:
        c = job.distill.adversarial
        student = job.new_student().to(job.device)
        teacher = job.teacher.to(job.device).eval()
        hook = AdversarialHook(
            teacher, len(job.data.classes), job.data.input_shape, c.on, c.weight, c.lr, c.hidden, c.conditional
        )
        hook.build(student)
        result = train_with(job, student, job.distill, methods_of(job), hooks=[hook], teacher_fn=job.teacher_fn)
        return SchemeOutcome(
            student,
            result,
            {"adversarial": {**c.model_dump(), "last_discriminator_loss": getattr(hook, "last_d_loss", None)}},
        )
