"""Teacher-assistant KD (TAKD; Mirzadeh, Farajtabar, Li, Levine, Matsukawa, Ghasemzadeh, AAAI 2020,
"Improved Knowledge Distillation via Teacher Assistant").

When the gap between teacher and student is large, distil in a chain: teacher -> assistant (an
intermediate-size model) -> student, each link an ordinary distill run with the same methods and
budget. ``distill.assistant`` (CLI ``--assistant resnet14``) names the assistant's architecture;
the distill stage trains it first (saved as ``distill/assistant.pt``, with its accuracy in the
metrics and report), then distils the student from it with the configured scheme.
(The paper's CIFAR-100 example: ResNet110 -> ResNet20 -> ResNet8 gave 61.82% against 61.41% for
110 -> 8 directly.)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgekd.distill.schemes.base import SchemeJob, methods_of, train_with
from edgekd.models import count_parameters, create_model


def train_assistant(job: SchemeJob, arch: str | dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """Distil ``arch`` from ``job.teacher`` (offline, the job's methods); returns the model and its result."""
    torch.manual_seed(job.seed)
    assistant = create_model(arch, num_classes=len(job.data.classes), in_channels=job.data.input_shape[0])
    job.reporter.info(
        f"{job.label}: teacher assistant {assistant.arch_spec['name']} ({count_parameters(assistant):,} parameters) "
        "first (TAKD: teacher -> assistant -> student)"
    )
    result = train_with(
        job,
        assistant,
        job.distill,
        methods_of(job),
        label="assistant",
        ckpt="assistant_last.ckpt",
        teacher_fn=job.teacher_fn,
    )
    result["parameters"] = count_parameters(assistant)
    return assistant.eval(), result
