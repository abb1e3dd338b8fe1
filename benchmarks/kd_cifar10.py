"""KD gain on real CIFAR-10 under a fixed CPU budget: the same student with and without KD.

    python benchmarks/kd_cifar10.py [--data ../shared/data/cifar10] [--seeds 0 1] [--quick]

Trains one teacher (cached under benchmarks/work/), then for every seed and every row of
``METHODS`` trains the student from the same initial weights and data order, and writes
``benchmarks/results/kd_cifar10.md`` (+ ``.json``): top-1 on the 10,000 CIFAR-10 test images
at the last epoch (RepDistiller's convention), per seed, mean and spread, the gain over the
CE-only baseline, the budget, wall times and the machine. Finished runs are cached, so a rerun
after an interruption continues where it stopped. Add a method by adding a row to ``METHODS``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgekd.bench import host_description  # noqa: E402
from edgekd.config import (  # noqa: E402
    AugmentConfig,  # noqa: E402
    DistillConfig,
    MethodConfig,
)
from edgekd.data import augment_kwargs, compute_normalization, load_data  # noqa: E402
from edgekd.distill.methods import build_method  # noqa: E402
from edgekd.distill.trainer import TrainSetup, evaluate, train  # noqa: E402
from edgekd.io import atomic_write_json, atomic_write_text  # noqa: E402
from edgekd.models import create_model  # noqa: E402

# The budget (2-core CPU): a 20,000-image training subset, 15 epochs, SGD + cosine.
BUDGET = {
    "teacher": "resnet20",
    "student": "resnet8",
    "train_samples": 20000,
    "teacher_epochs": 15,
    "student_epochs": 15,
    "batch_size": 128,
    "lr": 0.1,
    "weight_decay": 5e-4,
    "schedule": "cosine",
}
QUICK = {**BUDGET, "train_samples": 1000, "teacher_epochs": 1, "student_epochs": 1}

# Rows of the table: name -> (CE weight, [methods]). Defaults from REFERENCES.md.
METHODS: dict[str, tuple[float, list[MethodConfig]]] = {
    "CE only (baseline)": (1.0, []),
    "KD (T=4, 0.1 CE + 0.9 KD)": (0.1, [MethodConfig(name="kd", weight=0.9, params={"T": 4.0})]),
}


def _config(budget: dict, epochs: int, ce_weight: float, methods: list[MethodConfig]) -> DistillConfig:
    return DistillConfig(
        epochs=epochs,
        batch_size=budget["batch_size"],
        lr=budget["lr"],
        weight_decay=budget["weight_decay"],
        schedule=budget["schedule"],
        ce_weight=ce_weight,
        methods=methods,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cifar10"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="a 1-epoch smoke run (results not written)")
    args = ap.parse_args()
    budget = QUICK if args.quick else BUDGET
    torch.set_num_threads(args.threads)
    work = ROOT / "benchmarks" / "work" / ("kd_cifar10_quick" if args.quick else "kd_cifar10")
    work.mkdir(parents=True, exist_ok=True)

    data = load_data(args.data, seed=0, max_train_samples=budget["train_samples"])
    norm = compute_normalization(data.train)
    aug = augment_kwargs(AugmentConfig(), data.input_shape)
    device = torch.device("cpu")
    n_classes, channels = len(data.classes), data.input_shape[0]
    print(f"data: {len(data.train)} train / {len(data.val)} test images ({data.val_source})", flush=True)

    def setup(model, cfg, seed, teacher=None, methods=()):
        return TrainSetup(
            student=model,
            train=data.train,
            val=data.val,
            normalization=norm,
            config=cfg,
            seed=seed,
            device=device,
            teacher=teacher,
            methods=list(methods),
            augment=aug,
        )

    t0 = time.perf_counter()
    teacher_path = work / "teacher.pt"
    torch.manual_seed(0)
    teacher = create_model(budget["teacher"], num_classes=n_classes, in_channels=channels)
    if teacher_path.is_file():
        teacher.load_state_dict(torch.load(teacher_path, weights_only=True))
        teacher_info = json.loads((work / "teacher.json").read_text())
    else:
        print(f"teacher: training {budget['teacher']} for {budget['teacher_epochs']} epochs", flush=True)
        result = train(
            setup(teacher, _config(budget, budget["teacher_epochs"], 1.0, []), 0),
            checkpoint_path=work / "teacher_last.ckpt",
            resume=True,
            label="teacher",
        )
        torch.save(teacher.state_dict(), teacher_path)
        teacher_info = {"top1": result["final"]["val_top1"], "seconds": result["seconds"]}
        atomic_write_json(work / "teacher.json", teacher_info)
    teacher.eval()
    teacher_info["top1"] = evaluate(teacher, data.val, norm, device)["top1"]
    print(f"teacher: {100 * teacher_info['top1']:.2f}%", flush=True)

    runs: dict[str, dict[int, dict]] = {}
    for seed in args.seeds:
        for name, (ce_weight, methods) in METHODS.items():
            key = f"{name}-seed{seed}"
            cache = work / (key.replace(" ", "_").replace("/", "_") + ".json")
            if cache.is_file():
                runs.setdefault(name, {})[seed] = json.loads(cache.read_text())
                continue
            print(f"student: {name}, seed {seed}", flush=True)
            torch.manual_seed(seed)
            student = create_model(budget["student"], num_classes=n_classes, in_channels=channels)
            built = [(build_method(m.name, m.params), m.weight) for m in methods]
            result = train(
                setup(
                    student,
                    _config(budget, budget["student_epochs"], ce_weight, methods),
                    seed,
                    teacher=teacher if built else None,
                    methods=built,
                ),
                label=key,
            )
            record = {
                "top1": result["final"]["val_top1"],
                "best_top1": result["best"]["val_top1"],
                "seconds": result["seconds"],
            }
            print(f"  -> {100 * record['top1']:.2f}% in {record['seconds']:.0f}s", flush=True)
            atomic_write_json(cache, record)
            runs.setdefault(name, {})[seed] = record

    if args.quick:
        print("quick run finished; results not written")
        return
    write_results(budget, teacher_info, runs, time.perf_counter() - t0, args, data)


def _stats(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def write_results(budget, teacher_info, runs, wall, args, data) -> None:
    host = host_description()
    baseline_name = next(iter(METHODS))
    base = [runs[baseline_name][s]["top1"] for s in args.seeds]
    lines = [
        "# KD on CIFAR-10 under a fixed CPU budget",
        "",
        f"Teacher {budget['teacher']} ({100 * teacher_info['top1']:.2f}% top-1), student {budget['student']}; "
        f"{budget['train_samples']} training images (seeded stratified subset of the 50,000), evaluated on the "
        f"{len(data.val)} CIFAR-10 test images; {budget['student_epochs']} student epochs "
        f"({budget['teacher_epochs']} for the teacher), batch {budget['batch_size']}, SGD lr {budget['lr']} "
        f"{budget['schedule']}, weight decay {budget['weight_decay']}; standard crop + flip augmentation. "
        f"Top-1 at the last epoch (RepDistiller's convention), seeds {args.seeds}.",
        "",
        "| method | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean ± std | gain vs CE (mean ± std) |",
        "|---|" + "---:|" * (len(args.seeds) + 2),
    ]
    for name, per_seed in runs.items():
        vals = [per_seed[s]["top1"] for s in args.seeds]
        mean, sd = _stats(vals)
        gains = [v - b for v, b in zip(vals, base, strict=True)]
        gmean, gsd = _stats(gains)
        gain = "-" if name == baseline_name else f"{100 * gmean:+.2f} ± {100 * gsd:.2f}"
        lines.append(
            f"| {name} | "
            + " | ".join(f"{100 * v:.2f}" for v in vals)
            + f" | {100 * mean:.2f} ± {100 * sd:.2f} | {gain} |"
        )
    lines += [
        "",
        f"Wall time: {wall / 60:.1f} min for this invocation (cached runs excluded); per run: "
        + ", ".join(f"{n} {statistics.fmean(r[s]['seconds'] for s in args.seeds):.0f}s" for n, r in runs.items())
        + f"; teacher {teacher_info.get('seconds', 0):.0f}s.",
        f"Machine: {host.get('cpu')}, {host.get('logical_cores')} logical cores, torch {torch.__version__}, "
        f"{args.threads} threads, CPU only; Python {platform.python_version()}.",
        "Data caveat: this CIFAR-10 copy was rebuilt from JPEGs (../shared/data/README.md); compare rows with each "
        "other, not with published CIFAR-10 numbers.",
        "",
        "Command: `python benchmarks/kd_cifar10.py --seeds " + " ".join(map(str, args.seeds)) + "`",
        "",
    ]
    out = ROOT / "benchmarks" / "results"
    atomic_write_text(out / "kd_cifar10.md", "\n".join(lines))
    atomic_write_json(
        out / "kd_cifar10.json",
        {
            "budget": budget,
            "teacher": teacher_info,
            "runs": runs,
            "seeds": args.seeds,
            "host": host,
            "wall_seconds": wall,
        },
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
