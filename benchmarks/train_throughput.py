"""Training throughput of the distill trainer in each speed mode, student alone and KD, on this machine.

    python benchmarks/train_throughput.py [--data ../shared/data/cifar10] [--device auto] [--threads 1]
    python benchmarks/train_throughput.py --modes fp32 fp32-cl bf16 bf16-cl fp32-compile   # add compile rows

Modes (``edgekd.distill.speed``; names: precision, ``-cl`` channels_last, ``-compile`` torch.compile):
fp32, fp32-cl, bf16, bf16-cl on every device; fp16-cl, fp32-compile and bf16-cl-compile by default on CUDA
only (fp16 needs CUDA; compiling on a 2-core CPU takes minutes per model and configuration).

Throughput: for each student (default resnet20, mobilenetv2: the issue's pair) and each mode, the real
``edgekd.distill.trainer.train`` runs 2 epochs of ``--steps`` steps at batch ``--batch`` on CIFAR-10
images (crop + flip), once with CE alone and once with KD from a resnet32 teacher (0.1 CE + 0.9 KD,
T 4; randomly initialised: speed does not depend on its weights). The first epoch is warm-up
(oneDNN/cuDNN kernel selection, compilation) and is not counted; the second is timed (the validation
split is 8 images, so evaluation is a negligible share). This repeats ``--repeats`` times with the
modes interleaved (round-robin), so that load from other processes hits every mode alike, and the
table reports the median. KD overhead is KD's time per image over the student alone's, in the same
mode. Speed-up is against fp32 in the same column.

Accuracy: resnet8 alone (CE) trained for ``--acc-epochs`` epochs on ``--acc-samples`` CIFAR-10 images,
top-1 on ``--acc-val`` test images, in fp32, fp32-cl and bf16-cl (+ fp16-cl on CUDA), seeds
``--acc-seeds``: the speed modes must not move accuracy beyond the seed spread.

Writes benchmarks/results/train_throughput.md (+ .json).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgekd.bench import host_description  # noqa: E402
from edgekd.config import AugmentConfig, DistillConfig  # noqa: E402
from edgekd.data import augment_kwargs, compute_normalization, load_data  # noqa: E402
from edgekd.data.splits import take  # noqa: E402
from edgekd.distill.methods import build_method  # noqa: E402
from edgekd.distill.trainer import TrainSetup, resolve_device, train  # noqa: E402
from edgekd.io import atomic_write_json, atomic_write_text  # noqa: E402
from edgekd.models import create_model  # noqa: E402

CPU_MODES = ["fp32", "fp32-cl", "bf16", "bf16-cl"]
CUDA_MODES = [*CPU_MODES, "fp16-cl", "fp32-compile", "bf16-cl-compile"]


def parse_mode(mode: str) -> dict:
    """``bf16-cl-compile`` -> {precision: bf16, channels_last: True, compile: True}."""
    parts = mode.split("-")
    if parts[0] not in ("fp32", "bf16", "fp16") or not set(parts[1:]) <= {"cl", "compile"}:
        raise SystemExit(f"unknown mode {mode!r}: a precision (fp32, bf16, fp16), then -cl and/or -compile")
    return {"precision": parts[0], "channels_last": "cl" in parts[1:], "compile": "compile" in parts[1:]}


def throughput(data, norm, aug, device, student_arch, teacher_arch, mode, kd, args) -> dict:
    """Images per second of the trainer in ``mode``, timed on the second of two epochs."""
    torch.manual_seed(0)
    student = create_model(student_arch, num_classes=10, in_channels=3)
    teacher = create_model(teacher_arch, num_classes=10, in_channels=3) if kd else None
    cfg = DistillConfig(
        epochs=2,
        batch_size=args.batch,
        lr=0.05,
        schedule="constant",
        ce_weight=0.1 if kd else 1.0,
        methods=[{"name": "kd", "weight": 0.9}] if kd else [],
        **parse_mode(mode),
    )
    methods = [(build_method("kd", {"T": 4.0}), 0.9)] if kd else []
    setup = TrainSetup(student, data["train"], data["val"], norm, cfg, 0, device, teacher, methods, aug)
    t0 = time.perf_counter()
    result = train(setup)
    return {
        "images_per_s": args.steps * args.batch / result["history"][1]["seconds"],
        "warmup_s": result["history"][0]["seconds"],
        "wall_s": time.perf_counter() - t0,
    }


def accuracy(full, norm, aug, device, mode, seed, args) -> float:
    torch.manual_seed(seed)
    student = create_model("resnet8", num_classes=10, in_channels=3)
    cfg = DistillConfig(
        epochs=args.acc_epochs, batch_size=args.batch, lr=0.1, ce_weight=1.0, methods=[], **parse_mode(mode)
    )
    train_split = take(full.train, np.arange(args.acc_samples))
    val = take(full.val, np.random.default_rng(0).permutation(len(full.val))[: args.acc_val])
    result = train(TrainSetup(student, train_split, val, norm, cfg, seed, device, augment=aug))
    return result["final"]["val_top1"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cifar10"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: a shared 2-core machine)")
    ap.add_argument("--students", nargs="+", default=["resnet20", "mobilenetv2"])
    ap.add_argument("--teacher", default="resnet32")
    ap.add_argument("--modes", nargs="+", default=None, help=f"default CPU {CPU_MODES}, CUDA {CUDA_MODES}")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=4, help="steps per epoch")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats of every measurement")
    ap.add_argument("--acc-epochs", type=int, default=2)
    ap.add_argument("--acc-samples", type=int, default=4000)
    ap.add_argument("--acc-val", type=int, default=2000)
    ap.add_argument("--acc-seeds", type=int, nargs="+", default=[0, 1])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    modes = args.modes or (CUDA_MODES if device.type == "cuda" else CPU_MODES)
    for mode in modes:
        parse_mode(mode)
    t_start = time.perf_counter()
    full = load_data(args.data, seed=0, max_train_samples=max(args.acc_samples, args.steps * args.batch))
    norm = compute_normalization(full.train)
    aug = augment_kwargs(AugmentConfig(), full.input_shape)
    data = {"train": take(full.train, np.arange(args.steps * args.batch)), "val": take(full.val, np.arange(8))}

    samples: dict[str, list[dict]] = {}
    for rep in range(args.repeats):
        for student in args.students:
            for kd in (False, True):
                for mode in modes:  # round-robin: every mode sees the same background load
                    key = f"{student}|{'kd' if kd else 'alone'}|{mode}"
                    r = throughput(data, norm, aug, device, student, args.teacher, mode, kd, args)
                    samples.setdefault(key, []).append(r)
                    print(f"repeat {rep + 1}: {key}: {r['images_per_s']:.1f} images/s", flush=True)
    runs = {
        key: {"images_per_s": statistics.median(r["images_per_s"] for r in rs), "samples": rs}
        for key, rs in samples.items()
    }
    acc_modes = [m for m in ("fp32", "fp32-cl", "bf16-cl", "fp16-cl") if device.type == "cuda" or "fp16" not in m]
    acc: dict[str, dict[int, float]] = {}
    for seed in args.acc_seeds:
        for mode in acc_modes:
            acc.setdefault(mode, {})[seed] = accuracy(full, norm, aug, device, mode, seed, args)
            print(f"accuracy {mode} seed {seed}: {100 * acc[mode][seed]:.2f}%", flush=True)
    write_results(args, device, modes, runs, acc, time.perf_counter() - t_start)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    host = host_description()
    return f"CPU {host.get('cpu')}, {host.get('logical_cores')} logical cores"


def write_results(args, device, modes, runs, acc, wall) -> None:
    lines = [
        "# Trainer throughput by speed mode (student alone and KD)",
        "",
        f"Device: {_device_name(device)}; {args.threads} torch CPU thread(s); torch {torch.__version__}, Python "
        f"{platform.python_version()}. Batch {args.batch}, CIFAR-10 32x32 with crop + flip, SGD; the real trainer "
        f"(`edgekd.distill.trainer.train`), {args.steps} steps per epoch, 1 warm-up epoch then 1 timed epoch, "
        f"median of {args.repeats} repeats with the modes interleaved. KD: teacher {args.teacher} (0.1 CE + 0.9 KD, "
        "T 4), its forward pass under inference_mode. Modes: precision (autocast), `-cl` channels_last, "
        "`-compile` torch.compile. Speed-up: against fp32 in the same column; KD overhead: KD's time per image "
        "over the student alone's, same mode.",
        "",
        "| student | mode | student alone (img/s) | speed-up | KD (img/s) | speed-up | KD overhead (x) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for student in args.students:
        base = {k: runs.get(f"{student}|{k}|fp32", {}).get("images_per_s") for k in ("alone", "kd")}
        for mode in modes:
            alone = runs[f"{student}|alone|{mode}"]["images_per_s"]
            kd = runs[f"{student}|kd|{mode}"]["images_per_s"]
            up = {k: f"{v / base[k]:.2f}x" if base[k] else "-" for k, v in (("alone", alone), ("kd", kd))}
            lines.append(
                f"| {student} | {mode} | {alone:.1f} | {up['alone']} | {kd:.1f} | {up['kd']} | {alone / kd:.2f} |"
            )
    lines += [
        "",
        f"Accuracy after a fixed short budget: resnet8 alone (CE), {args.acc_epochs} epochs on {args.acc_samples} "
        f"CIFAR-10 training images, batch {args.batch}, SGD lr 0.1 cosine; top-1 on {args.acc_val} test images "
        "(last epoch).",
        "",
        "| mode | " + " | ".join(f"seed {s}" for s in args.acc_seeds) + " | mean ± std | vs fp32 (points) |",
        "|---|" + "---:|" * (len(args.acc_seeds) + 2),
    ]
    fp32_mean = statistics.fmean(acc["fp32"].values())
    spreads = []
    for mode, per_seed in acc.items():
        vals = [per_seed[s] for s in args.acc_seeds]
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        spreads.append(sd)
        mean = statistics.fmean(vals)
        diff = "-" if mode == "fp32" else f"{100 * (mean - fp32_mean):+.2f}"
        lines.append(
            f"| {mode} | "
            + " | ".join(f"{100 * v:.2f}" for v in vals)
            + f" | {100 * mean:.2f} ± {100 * sd:.2f} | {diff} |"
        )
    worst = max(abs(statistics.fmean(v.values()) - fp32_mean) for v in acc.values())
    seed_spread = max(spreads)
    lines += [
        "",
        f"Largest accuracy difference from fp32: {100 * worst:.2f} points; largest seed spread (std): "
        f"{100 * seed_spread:.2f} points; " + ("within" if worst <= max(seed_spread, 1e-9) else "NOT within") + " it.",
        "",
        f"Wall time {wall / 60:.1f} min. Command: `python benchmarks/train_throughput.py"
        + (f" --device {args.device}" if args.device != "auto" else "")
        + (f" --threads {args.threads}" if args.threads != 1 else "")
        + (f" --modes {' '.join(modes)}" if args.modes else "")
        + "`",
        "",
    ]
    out = ROOT / "benchmarks" / "results"
    atomic_write_text(out / "train_throughput.md", "\n".join(lines))
    atomic_write_json(
        out / "train_throughput.json",
        {
            "device": _device_name(device),
            "host": host_description(),
            "args": vars(args),
            "modes": modes,
            "runs": runs,
            "accuracy": {m: {str(s): v for s, v in r.items()} for m, r in acc.items()},
            "wall_seconds": wall,
        },
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
