"""A small, deterministic detection training loop (student alone, or distilled from a teacher).

``train_detector`` trains an edgekd detector (or a torchvision one, with its own losses) with AdamW,
a linear warm-up and a cosine decay, gradient-norm clipping at 10, and the batches of
``iterate_batches`` (order and augmentation fixed by ``seed``). With ``teacher`` and ``kd`` (a map
from KD method names to weights, see ``edgekd.tasks.detect.kd``) the frozen teacher runs in eval
mode under ``no_grad`` and the weighted KD terms are added to the student's own loss; adapters the
methods need are trained with the student. On CPU the same call gives the same weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from edgekd.tasks.detect.dataset import DetectionData
from edgekd.tasks.detect.edge_detector import is_edge_detector
from edgekd.tasks.detect.loss import assign, dense_predictions, detection_loss
from edgekd.tasks.detect.transforms import iterate_batches


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_detector(
    model: nn.Module,
    data: DetectionData,
    *,
    epochs: int = 10,
    lr: float = 2e-3,
    batch_size: int = 16,
    imgsz: int = 320,
    seed: int = 0,
    teacher: nn.Module | None = None,
    kd: dict[str, float] | None = None,
    kd_options: dict | None = None,
    weight_decay: float = 5e-4,
    hflip: float = 0.5,
    scale: tuple[float, float] = (0.6, 1.4),
    mosaic: float = 0.0,
    max_steps: int | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Train ``model`` in place on ``data.train``; returns ``{"steps", "epochs": [mean loss terms per epoch]}``."""
    torch.manual_seed(seed)
    distiller = None
    if teacher is not None and kd:
        from edgekd.tasks.detect.kd import Distiller

        distiller = Distiller(teacher, model, kd, imgsz=imgsz, options=kd_options)
    params = [p for p in model.parameters() if p.requires_grad]
    if distiller is not None:
        params += list(distiller.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    per_epoch = math.ceil(len(data.train) / batch_size)
    total = epochs * per_epoch if max_steps is None else min(max_steps, epochs * per_epoch)
    warmup = max(1, min(100, total // 10))
    step, history = 0, []
    model.train()
    for epoch in range(epochs):
        sums: dict[str, float] = {}
        count = 0
        for batch in iterate_batches(
            data.train, imgsz, batch_size, train=True, seed=seed, epoch=epoch, hflip=hflip, scale=scale, mosaic=mosaic
        ):
            if step >= total:
                break
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, lr, warmup)
            if is_edge_detector(model):
                out = model(batch.images)
                dense = dense_predictions(out, model.strides, model.reg_max)
                assignment = assign(dense, batch.targets)
                terms = detection_loss(
                    out, batch.targets, model.strides, model.reg_max, dense=dense, assignment=assignment
                )
            else:
                out, dense, assignment = None, None, None
                terms = model.loss(batch.images, batch.targets)
            loss = terms["total"]
            if distiller is not None:
                kd_terms = distiller(batch.images, batch.targets, out, dense, assignment)
                loss = loss + kd_terms.pop("total")
                terms.update({f"kd_{k}": v for k, v in kd_terms.items()})
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
            step += 1
            count += 1
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
        history.append({k: v / max(1, count) for k, v in sums.items()})
        if log is not None and count:
            log(f"epoch {epoch + 1}/{epochs}: " + ", ".join(f"{k} {v:.4f}" for k, v in history[-1].items()))
        if step >= total:
            break
    model.eval()
    return {"steps": step, "epochs": history}
