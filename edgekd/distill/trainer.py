"""The training loop behind ``distill``, its ``--baseline`` and ``train-teacher``.

    loss = ce_weight * CE(student_logits, y) + sum_i r_i(t) * weight_i * sum(method_i(taps_s, taps_t, y, epoch))

``r_i(t)`` is 1 unless ``distill.feature_warmup_epochs`` ramps the feature, relation and contrastive
terms in (:func:`ramp_factor`).

The teacher (if any) is frozen, in eval mode and run under ``inference_mode`` (``no_grad`` for a
scheme's ``teacher_fn``). Precision, memory format and compilation: ``edgekd.distill.speed``. Resumable: a checkpoint
(model, optimizer, scheduler, methods, history) is written atomically after every epoch, and each
epoch's data order, augmentation and RNG state derive from ``(seed, epoch)`` alone, so a run
resumed from epoch k ends with the same weights as one that never stopped.

DDP-ready: when ``torch.distributed`` is initialised (``torchrun``), the student is wrapped in
``DistributedDataParallel``, each rank reads its share of every epoch's permutation, metrics are
all-reduced, and only rank 0 writes files.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from edgekd.console import Reporter
from edgekd.data import BatchIterator, Normalization, Split
from edgekd.distill import speed
from edgekd.distill.config import DistillConfig
from edgekd.distill.methods import BindInfo, Method, bind_methods
from edgekd.errors import EdgekdError
from edgekd.io import atomic_torch_save


@dataclass
class TrainSetup:
    """What to train and on what; ``teacher=None`` trains with cross-entropy alone."""

    student: nn.Module
    train: Split
    val: Split
    normalization: Normalization
    config: DistillConfig
    seed: int
    device: torch.device
    teacher: nn.Module | None = None
    methods: list[tuple[Method, float]] = field(default_factory=list)
    augment: dict[str, Any] = field(default_factory=dict)  # random_crop, padding, hflip
    num_workers: int = 0
    # Scheme hooks (edgekd.distill.schemes; empty/None = plain offline KD): ``hooks`` add loss terms
    # (TrainHook), ``teacher_fn(x, y, idx, epoch)`` replaces the teacher call (cache, multi-teacher,
    # cross-modal views), ``student_view(x)`` is what the student sees (cross-modal; also at validation).
    hooks: list[Any] = field(default_factory=list)
    teacher_fn: Callable[..., torch.Tensor] | None = None
    student_view: Callable[[torch.Tensor], torch.Tensor] | None = None


def lr_setting(setup: TrainSetup, label: str) -> str:
    """The learning-rate setting of the command that trains here, for divergence advice: ``--lr`` of
    ``train-teacher``, ``quantize.lr`` for QAT, else ``distill.lr``."""
    from edgekd.distill.config import TeacherTrainConfig

    if isinstance(setup.config, TeacherTrainConfig):
        return "--lr of train-teacher"
    if label == "qat":
        return "quantize.lr, e.g. --set quantize.lr=1e-4"
    return "distill.lr, e.g. --set distill.lr=0.01"


def resolve_device(name: str) -> torch.device:
    """``auto`` is the GPU of this rank (``LOCAL_RANK`` under torchrun) when there is one, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise EdgekdError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index or 0) >= count:
            raise EdgekdError(f"device {name!r} is not available here ({count} CUDA GPUs); use --device cpu or auto")
    elif device.type != "cpu":
        raise EdgekdError(f"device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    return device


def init_distributed_from_env() -> None:
    """Join the process group that ``torchrun`` describes in the environment (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def lr_factor(epoch: int, cfg: DistillConfig) -> float:
    """Learning-rate multiplier for ``epoch`` (0-based): linear warm-up, then cosine or step decay."""
    if cfg.warmup_epochs and epoch < cfg.warmup_epochs:
        return (epoch + 1) / cfg.warmup_epochs
    if cfg.schedule == "cosine":
        span = max(1, cfg.epochs - cfg.warmup_epochs)
        return 0.5 * (1 + math.cos(math.pi * (epoch - cfg.warmup_epochs) / span))
    if cfg.schedule == "step":
        passed = sum(epoch >= round(m * cfg.epochs) for m in cfg.milestones)
        return cfg.gamma**passed
    return 1.0


RAMPED_KINDS = ("feature", "relation", "contrastive")


def ramp_factor(progress: float, warmup_epochs: float) -> float:
    """The weight multiplier of a ramped term after ``progress`` epochs (``epoch + step / steps``):

        factor = min(progress / W, 1)      (1 when W = 0: no ramp)

    A linear warm-up as DKD's (Zhao et al., CVPR 2022; mdistiller multiplies DKD by min(epoch / 20, 1)),
    here per step and for the feature, relation and contrastive terms (``distill.feature_warmup_epochs``):
    at their reference weights (AT 1000, RKD 25/50, CRD 0.8) their gradients outweigh CE's 20-60x at
    the start of training, which short budgets do not recover from."""
    if warmup_epochs <= 0:
        return 1.0
    return min(max(progress, 0.0) / warmup_epochs, 1.0)


def method_ramps(methods, cfg: DistillConfig) -> list[float]:
    """Warm-up epochs per method: ``distill.feature_warmup_epochs`` for feature, relation and
    contrastive methods, 0 for response methods (KD; DKD ramps itself)."""
    warmup = float(getattr(cfg, "feature_warmup_epochs", 0.0) or 0.0)
    return [warmup if getattr(m, "kind", "response") in RAMPED_KINDS else 0.0 for m in methods]


def _optimizer(params, cfg: DistillConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def example_batch(split: Split, normalization: Normalization, device: torch.device, n: int = 2) -> torch.Tensor:
    """The first ``n`` training images, normalised: the dummy batch that sizes taps and connectors."""
    batches = BatchIterator(
        split, min(n, len(split)), shuffle=False, seed=0, normalization=normalization, device=device
    )
    return next(iter(batches))[0]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    split: Split,
    normalization: Normalization,
    device: torch.device,
    batch_size: int = 256,
    view: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Top-1 accuracy and mean cross-entropy of ``model`` on ``split`` (eval mode); ``view``
    transforms each normalised batch first (a cross-modal student's view)."""
    was_training = model.training
    model.eval()
    rank, world = _rank_world()
    correct = torch.zeros((), dtype=torch.float64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.float64, device=device)
    batches = BatchIterator(
        split,
        batch_size,
        shuffle=False,
        seed=0,
        normalization=normalization,
        device=device,
        rank=rank,
        world_size=world,
    )
    for x, y in batches:
        logits = model(view(x) if view is not None else x)
        correct += (logits.argmax(1) == y).sum()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        count += y.numel()
    if world > 1:
        for t in (correct, loss_sum, count):
            dist.all_reduce(t)
    model.train(was_training)
    n = max(count.item(), 1.0)
    return {"top1": correct.item() / n, "loss": loss_sum.item() / n, "samples": int(count.item())}


def train(
    setup: TrainSetup,
    *,
    checkpoint_path: Path | None = None,
    resume: bool = False,
    reporter: Reporter | None = None,
    label: str = "train",
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train ``setup.student`` in place; return ``{"final": ..., "best": ..., "history": [...]}``.

    ``final`` is the last epoch (RepDistiller's convention), ``best`` the epoch with the highest
    validation top-1 (mdistiller's); reports say which they show.
    """
    reporter = reporter or Reporter(quiet=True)
    cfg, device = setup.config, setup.device
    init_distributed_from_env()
    rank, world = _rank_world()
    student = setup.student.to(device)
    methods = nn.ModuleList([m for m, _ in setup.methods])
    weights = [w for _, w in setup.methods]
    ramps = method_ramps(methods, cfg)
    teacher = setup.teacher
    if teacher is not None:
        teacher = teacher.to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    precision = getattr(cfg, "precision", "fp32")
    speed.check_precision(precision, device)
    channels_last = speed.use_channels_last(getattr(cfg, "channels_last", None), device)
    speed.to_memory_format(student, channels_last)
    speed.to_memory_format(teacher, channels_last)
    # Feature taps (edgekd.distill.taps): hooks for the taps the methods read; connectors sized by one probe.
    distilling = (teacher is not None or setup.teacher_fn is not None) and bool(setup.methods)
    s_taps, t_taps = bind_methods(
        list(methods) if distilling else [],
        student,
        teacher if distilling else None,
        getattr(cfg, "taps", None),
        example_batch(setup.train, setup.normalization, device) if distilling else None,
        BindInfo(num_samples=len(setup.train), labels=setup.train.labels),
    )
    with_index = distilling and any("index" in m.taps for m in methods)
    has_teacher = teacher is not None or setup.teacher_fn is not None
    teacher_features = t_taps is not None and bool(set(t_taps.names) - {"logits"})
    methods = methods.to(device)
    model: nn.Module = student
    if world > 1:
        model = nn.parallel.DistributedDataParallel(student)
    student_forward = speed.compiled(model, getattr(cfg, "compile", False))
    teacher_forward = speed.compiled(teacher, getattr(cfg, "compile", False))
    scaler = speed.grad_scaler(precision, device)

    hooks = nn.ModuleList(setup.hooks).to(device)
    for hook in hooks:
        hook.attach(student, setup)
    params = list(student.parameters()) + list(methods.parameters())
    params += [p for hook in hooks for p in hook.trainable_parameters()]
    optimizer = _optimizer(params, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(e, cfg))
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if resume and checkpoint_path is not None and checkpoint_path.is_file():
        state = torch.load(checkpoint_path, map_location=device, weights_only=True)
        student.load_state_dict(state["model"])
        methods.load_state_dict(state["methods"])
        if "hooks" in state:
            hooks.load_state_dict(state["hooks"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        history = list(state["history"])
        start_epoch = int(state["epoch"])
        reporter.info(f"{label}: resuming after epoch {start_epoch}/{cfg.epochs} from {checkpoint_path}")

    steps_per_epoch = len(
        BatchIterator.training(
            setup.train, cfg.batch_size, setup.seed, 0, setup.normalization, rank=rank, world_size=world
        )
    )
    with reporter.progress(f"{label} epoch", total=steps_per_epoch) as bar:
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            torch.manual_seed(setup.seed * 1000 + epoch)
            bar.reset(f"{label} epoch {epoch + 1}/{cfg.epochs}", steps_per_epoch)
            model.train()
            methods.train()
            batches = BatchIterator.training(
                setup.train,
                cfg.batch_size,
                setup.seed,
                epoch,
                setup.normalization,
                device=device,
                num_workers=setup.num_workers,
                rank=rank,
                world_size=world,
                with_index=True,  # sample indices: CRD's memory bank, the teacher cache, CS-KD pairs
                **setup.augment,
            )
            hooks.train()
            sums: dict[str, float] = {}
            seen = 0
            for step, (x, y, idx) in enumerate(batches):
                x = speed.batch_format(x, channels_last)
                x_student = setup.student_view(x) if setup.student_view is not None else x
                with speed.autocast(precision, device):
                    s_out = speed.float_taps(s_taps(x_student, forward=student_forward))
                logits = s_out["logits"]
                terms = {"ce": setup.config.ce_weight * F.cross_entropy(logits, y)}
                teacher_logits = None
                if distilling or (has_teacher and any(h.needs_teacher for h in hooks)):
                    if setup.teacher_fn is not None:  # cache, multi-teacher mix, cross-modal view
                        with torch.no_grad(), speed.autocast(precision, device):
                            teacher_logits = setup.teacher_fn(x, y, idx, epoch)
                            t_out = t_taps(x, forward=teacher_forward) if teacher_features else {}
                            t_out["logits"] = teacher_logits
                        t_out = speed.float_taps(t_out)
                    else:
                        with torch.inference_mode(), speed.autocast(precision, device):
                            if t_taps is not None:
                                t_out = t_taps(x, forward=teacher_forward)
                            else:
                                t_out = {"logits": teacher_forward(x)}
                        t_out = speed.from_inference(t_out)
                    teacher_logits = t_out["logits"]
                if distilling:
                    if with_index:
                        s_out["index"] = t_out["index"] = idx
                    progress = epoch + step / max(steps_per_epoch, 1)
                    for method, weight, ramp in zip(methods, weights, ramps, strict=True):
                        weight = weight * ramp_factor(progress, ramp)
                        for term, value in method(s_out, t_out, y, epoch).items():
                            terms[term] = terms.get(term, 0.0) + weight * value
                for hook in hooks:
                    with speed.autocast(precision, device):  # a hook may run models (peers, discriminators)
                        hook_terms = hook.terms(x_student, y, idx, logits, teacher_logits, epoch)
                    for term, value in hook_terms.items():
                        terms[term] = terms.get(term, 0.0) + value.float()
                loss = sum(terms.values())
                if not torch.isfinite(loss):
                    raise EdgekdError(
                        f"{label}: the loss became {loss.item()} in epoch {epoch + 1} (training diverged); "
                        f"lower the learning rate ({lr_setting(setup, label)}) and rerun"
                    )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)  # optimizer.step(), unless fp16 gradients overflowed (then skipped)
                scaler.update()
                for term, value in terms.items():
                    sums[term] = sums.get(term, 0.0) + float(value.detach()) * y.numel()
                seen += y.numel()
                bar.advance()
                bar.note(f"loss {loss.item():.3f}")
            scheduler.step()
            if setup.teacher_fn is not None and hasattr(setup.teacher_fn, "end_epoch"):
                setup.teacher_fn.end_epoch(epoch)
            val = evaluate(student, setup.val, setup.normalization, device, view=setup.student_view)
            if not math.isfinite(val["loss"]):
                raise EdgekdError(
                    f"{label}: the model's outputs became non-finite in epoch {epoch + 1} (training diverged); "
                    f"lower the learning rate ({lr_setting(setup, label)}) and rerun"
                )
            record = {
                "epoch": epoch + 1,
                "lr": optimizer.param_groups[0]["lr"],
                "train_loss": {k: v / max(seen, 1) for k, v in sums.items()},
                "val_top1": val["top1"],
                "val_loss": val["loss"],
                "seconds": round(time.perf_counter() - t0, 3),
            }
            history.append(record)
            if checkpoint_path is not None and rank == 0:
                atomic_torch_save(
                    checkpoint_path,
                    {
                        "epoch": epoch + 1,
                        "model": student.state_dict(),
                        "methods": methods.state_dict(),
                        "hooks": hooks.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict(),
                        "history": history,
                    },
                )
            reporter.info(
                f"{label} epoch {epoch + 1}/{cfg.epochs}: val top-1 {100 * val['top1']:.2f}%  "
                f"loss {sum(record['train_loss'].values()):.4f}  ({record['seconds']:.1f}s)"
            )
            if on_epoch is not None:
                on_epoch(record)
    for hook in hooks:
        hook.detach()
    s_taps.close()
    if t_taps is not None:
        t_taps.close()
    speed.to_memory_format(student, False)  # hand back ordinary contiguous models (export, checkpoints)
    speed.to_memory_format(teacher, False)
    student.eval()
    best = max(history, key=lambda r: r["val_top1"])
    return {
        "final": {"epoch": history[-1]["epoch"], "val_top1": history[-1]["val_top1"]},
        "best": {"epoch": best["epoch"], "val_top1": best["val_top1"]},
        "epochs": cfg.epochs,
        "train_samples": len(setup.train),
        "val_samples": len(setup.val),
        "seconds": round(sum(r["seconds"] for r in history), 3),
        "history": history,
    }
