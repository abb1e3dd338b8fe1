"""Data-free distillation by DeepInversion (Yin, Molchanov, Alvarez, Li, Mallya, Hoiem, Jha, Kautz,
CVPR 2020, "Dreaming to Distill: Data-free Knowledge Transfer via DeepInversion").

Inputs are synthesised from the teacher alone: starting from noise, Adam optimises a batch of
images so that the teacher classifies them as chosen target classes and the statistics of every
BatchNorm layer's input match that layer's running statistics:

    L(x) = CE(teacher(x'), y*) + r_bn * sum_l m_l * (||mu_l(x') - mu_l^BN||_2 + ||var_l(x') - var_l^BN||_2)
           + a_tv2 * TV_2(x') + a_tv1 * TV_1(x') + a_l2 * ||x'||_2

where x' is x randomly shifted (jitter) and, for colour images, flipped; m_1 = ``first_bn_multiplier``
(the authors' later code weights the first BN layer 10x), m_l = 1 otherwise; TV are the authors'
total-variation priors over the four neighbour directions. Images are kept in the valid pixel
range, then stored as uint8 images so the ordinary training loop distils on them (with the
teacher's live outputs and the usual augmentation). Validation uses the real validation split.
Defaults follow the authors' CIFAR-10 example (r_bn 10, TV-L2 2.5e-5, Adam lr 0.1 with betas
(0.5, 0.9)); iterations are fewer than their 2,000 (raise ``data_free.iterations`` for more).
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgekd.console import Reporter
from edgekd.data import Normalization, Split
from edgekd.distill.config import DataFreeConfig
from edgekd.distill.schemes.base import Scheme, SchemeJob, SchemeOutcome, methods_of, register_scheme, train_with
from edgekd.errors import EdgekdError
from edgekd.io import atomic_write


class BNStats:
    """Forward hooks on every BatchNorm2d: the distance of its input's batch statistics to its running ones."""

    def __init__(self, model: nn.Module):
        self.layers = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None]
        self.losses: list[torch.Tensor] = []
        self.handles = [m.register_forward_hook(self._hook) for m in self.layers]

    def _hook(self, module: nn.BatchNorm2d, inputs, _out) -> None:
        x = inputs[0]
        mean = x.mean(dim=(0, 2, 3))
        var = x.permute(1, 0, 2, 3).reshape(x.shape[1], -1).var(1, unbiased=False)
        self.losses.append(torch.norm(module.running_mean - mean, 2) + torch.norm(module.running_var - var, 2))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def tv_priors(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepInversion's total variation priors (L2 and L1) over the four neighbour directions."""
    d = [
        x[:, :, :, :-1] - x[:, :, :, 1:],
        x[:, :, :-1, :] - x[:, :, 1:, :],
        x[:, :, 1:, :-1] - x[:, :, :-1, 1:],
        x[:, :, :-1, :-1] - x[:, :, 1:, 1:],
    ]
    return sum(torch.norm(t) for t in d), sum(t.abs().mean() for t in d) / 4


def synthesize(
    teacher: nn.Module,
    input_shape: tuple[int, int, int],
    num_classes: int,
    norm: Normalization,
    cfg: DataFreeConfig,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    reporter: Reporter | None = None,
) -> tuple[Split, dict]:
    """``cfg.samples`` uint8 images (balanced over the classes) and their target labels."""
    reporter = reporter or Reporter(quiet=True)
    teacher = teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    stats = BNStats(teacher)
    if not stats.layers:
        stats.remove()
        raise EdgekdError(
            "data-free distillation needs a teacher with BatchNorm layers (DeepInversion matches their statistics)"
        )
    c = input_shape[0]
    mean = torch.tensor(norm.mean, device=device).view(1, c, 1, 1)
    std = torch.tensor(norm.std, device=device).view(1, c, 1, 1)
    lo, hi = (0 - mean) / std, (1 - mean) / std
    jitter = cfg.jitter if cfg.jitter is not None else max(1, input_shape[-1] // 8)
    flip = c == 3
    gen = torch.Generator().manual_seed(seed)
    images, labels, finals = [], [], []
    t0 = time.perf_counter()
    n_done = 0
    with reporter.progress("data-free synthesis", total=cfg.samples) as bar:
        while n_done < cfg.samples:
            b = min(cfg.batch_size, cfg.samples - n_done)
            target = (torch.arange(n_done, n_done + b) % num_classes).to(device)
            x = torch.randn((b, *input_shape), generator=gen).to(device).requires_grad_(True)
            opt = torch.optim.Adam([x], lr=cfg.lr, betas=(0.5, 0.9), eps=1e-8)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.iterations)
            for _ in range(cfg.iterations):
                dx, dy = torch.randint(-jitter, jitter + 1, (2,), generator=gen).tolist()
                xj = torch.roll(x, shifts=(dx, dy), dims=(2, 3))
                if flip and torch.rand((), generator=gen) < 0.5:
                    xj = xj.flip(3)
                stats.losses.clear()
                out = teacher(xj)
                ce = F.cross_entropy(out, target)
                bn = stats.losses[0] * cfg.first_bn_multiplier + sum(stats.losses[1:])
                tv2, tv1 = tv_priors(xj)
                loss = ce + cfg.bn_weight * bn + cfg.tv_l2 * tv2 + cfg.tv_l1 * tv1 + cfg.l2 * torch.norm(xj)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                with torch.no_grad():
                    x.data = torch.max(torch.min(x, hi), lo)
            with torch.no_grad():
                px = (x * std + mean).clamp(0, 1)
                images.append((px * 255).round().to(torch.uint8).cpu())
                labels.append(target.cpu())
                finals.append(
                    {
                        "ce": float(ce),
                        "bn": float(bn),
                        "teacher_agrees": float((teacher(x).argmax(1) == target).float().mean()),
                    }
                )
            n_done += b
            bar.advance(b)
    stats.remove()
    split = Split(images=torch.cat(images), labels=torch.cat(labels).long())
    with torch.no_grad():  # how the teacher sees the stored (uint8) images
        agree = float((teacher(norm.normalize(split.images.to(device))).argmax(1).cpu() == split.labels).float().mean())
    info = {
        "samples": len(split),
        "iterations": cfg.iterations,
        "seconds": round(time.perf_counter() - t0, 2),
        "final_ce": float(np.mean([f["ce"] for f in finals])),
        "final_bn": float(np.mean([f["bn"] for f in finals])),
        "teacher_agreement_uint8": agree,
    }
    return split, info


def save_synthetic(path, split: Split) -> None:
    """The synthetic set as ``x`` (uint8 NCHW) and ``y`` in an .npz, written atomically."""

    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: numpy would append .npz to a path
            np.savez_compressed(f, x=split.images.numpy(), y=split.labels.numpy())

    atomic_write(path, write)


@register_scheme("data_free")
class DataFree(Scheme):
    """Synthesise, then distil on the synthetic images only (no real training image is read)."""

    def run(self, job: SchemeJob) -> SchemeOutcome:
        c = job.distill.data_free
        job.reporter.info(
            f"{job.label}: synthesising {c.samples} images from the teacher's BatchNorm statistics (DeepInversion)"
        )
        split, info = synthesize(
            job.teacher,
            tuple(job.data.input_shape),
            len(job.data.classes),
            job.normalization,
            c,
            seed=job.seed,
            device=job.device,
            reporter=job.reporter,
        )
        job.reporter.info(
            f"{job.label}: {info['samples']} synthetic images in {info['seconds']:.0f}s; the teacher labels "
            f"{100 * info['teacher_agreement_uint8']:.1f}% of them as their targets"
        )
        if job.out_dir is not None:
            save_synthetic(job.out_dir / "synthetic.npz", split)
        config = job.distill.model_copy(update={"ce_weight": c.ce_weight})
        student = job.new_student()
        result = train_with(job, student, config, methods_of(job), train=split)
        result["train_samples"] = len(split)
        return SchemeOutcome(student, result, {"data_free": {**c.model_dump(), **info, "real_training_images_used": 0}})
