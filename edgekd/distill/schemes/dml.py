"""Online distillation: deep mutual learning (DML; Zhang, Xiang, Hospedales, Lu, CVPR 2018).

N peers train together from scratch, with no pretrained teacher; each one learns from the labels
and from the others' predictions (the paper's eq. 10):

    L_k = CE(z_k, y) + 1/(N-1) * sum_{l != k} KL( p_l || p_k ),   p = softmax(z / T), T = 1

The others' predictions are detached (each peer's loss moves only that peer), and each peer has
its own optimizer and schedule. All peers are updated from one forward pass per step (the paper
recomputes predictions between the peers' updates; the simultaneous form is what most public
implementations use). Peer 0 (the configured student) is what the stage saves and exports; every
peer's validation accuracy is in the metrics. This is its own loop: it does not fit the
one-student training loop.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.data import BatchIterator
from edgekd.distill.functional import kd
from edgekd.distill.schemes.base import Scheme, SchemeJob, SchemeOutcome, checkpoint, register_scheme
from edgekd.distill.trainer import _optimizer, evaluate, lr_factor
from edgekd.errors import EdgekdError
from edgekd.io import atomic_torch_save
from edgekd.models import create_model


def dml_losses(logits: list[torch.Tensor], y: torch.Tensor, T: float = 1.0) -> list[torch.Tensor]:
    """Each peer's CE + mean KL from every other peer's (detached) prediction."""
    n = len(logits)
    out = []
    for k, z in enumerate(logits):
        mimic = sum(kd(z, logits[j].detach(), T) / (T * T) for j in range(n) if j != k) / (n - 1)
        out.append(F.cross_entropy(z, y) + mimic)
    return out


@register_scheme("dml")
class DML(Scheme):
    uses_teacher = False

    def run(self, job: SchemeJob) -> SchemeOutcome:
        c, cfg, device = job.distill.dml, job.distill, job.device
        peers: list[nn.Module] = [job.new_student()]
        archs = list(c.archs) + [peers[0].arch_spec] * c.peers
        for i in range(1, c.peers):
            torch.manual_seed(job.seed + i)
            peers.append(
                create_model(archs[i - 1], num_classes=len(job.data.classes), in_channels=job.data.input_shape[0])
            )
        peers = [p.to(device) for p in peers]
        optimizers = [_optimizer(p.parameters(), cfg) for p in peers]
        schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lambda e: lr_factor(e, cfg)) for o in optimizers]
        path = checkpoint(job, "last.ckpt")
        history: list[dict[str, Any]] = []
        start = 0
        if job.resume and path is not None and path.is_file():
            state = torch.load(path, map_location=device, weights_only=True)
            for p, o, s, st in zip(peers, optimizers, schedulers, state["peers"], strict=True):
                p.load_state_dict(st["model"])
                o.load_state_dict(st["optimizer"])
                s.load_state_dict(st["scheduler"])
            history, start = list(state["history"]), int(state["epoch"])
        for epoch in range(start, cfg.epochs):
            t0 = time.perf_counter()
            torch.manual_seed(job.seed * 1000 + epoch)
            for p in peers:
                p.train()
            sums = [0.0] * len(peers)
            seen = 0
            batches = BatchIterator.training(
                job.data.train, cfg.batch_size, job.seed, epoch, job.normalization, device=device, **job.augment
            )
            for x, y in batches:
                losses = dml_losses([p(x) for p in peers], y, c.T)
                total = sum(losses)
                if not torch.isfinite(total):
                    raise EdgekdError(
                        f"dml: the loss became {total.item()} in epoch {epoch + 1} (training diverged); "
                        "lower the learning rate (distill.lr) and rerun"
                    )
                for o in optimizers:
                    o.zero_grad(set_to_none=True)
                total.backward()  # peers share no parameters: each peer's gradient is its own loss's
                for o in optimizers:
                    o.step()
                for i, loss in enumerate(losses):
                    sums[i] += float(loss.detach()) * y.numel()
                seen += y.numel()
            for s in schedulers:
                s.step()
            vals = [evaluate(p, job.data.val, job.normalization, device) for p in peers]
            if not all(math.isfinite(v["loss"]) for v in vals):
                raise EdgekdError(f"dml: outputs became non-finite in epoch {epoch + 1}; lower distill.lr and rerun")
            record = {
                "epoch": epoch + 1,
                "lr": optimizers[0].param_groups[0]["lr"],
                "train_loss": {f"peer{i}": v / max(seen, 1) for i, v in enumerate(sums)},
                "val_top1": vals[0]["top1"],
                "val_loss": vals[0]["loss"],
                "peers_val_top1": [v["top1"] for v in vals],
                "seconds": round(time.perf_counter() - t0, 3),
            }
            history.append(record)
            job.reporter.info(
                f"{job.label} (dml) epoch {epoch + 1}/{cfg.epochs}: val top-1 "
                + ", ".join(f"peer{i} {100 * v['top1']:.2f}%" for i, v in enumerate(vals))
            )
            if path is not None:
                atomic_torch_save(
                    path,
                    {
                        "epoch": epoch + 1,
                        "history": history,
                        "peers": [
                            {"model": p.state_dict(), "optimizer": o.state_dict(), "scheduler": s.state_dict()}
                            for p, o, s in zip(peers, optimizers, schedulers, strict=True)
                        ],
                    },
                )
        for p in peers:
            p.eval()
        best = max(history, key=lambda r: r["val_top1"])
        result = {
            "final": {"epoch": history[-1]["epoch"], "val_top1": history[-1]["val_top1"]},
            "best": {"epoch": best["epoch"], "val_top1": best["val_top1"]},
            "epochs": cfg.epochs,
            "train_samples": len(job.data.train),
            "val_samples": len(job.data.val),
            "seconds": round(sum(r["seconds"] for r in history), 3),
            "history": history,
        }
        metrics = {
            "dml": {
                "peers": [p.arch_spec["name"] for p in peers],
                "peers_val_top1": history[-1]["peers_val_top1"],
                "saved_peer": 0,
                "T": c.T,
            }
        }
        return SchemeOutcome(peers[0], result, metrics)
