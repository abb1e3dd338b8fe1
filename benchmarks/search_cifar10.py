"""Search acceptance on CIFAR-10: with a budget of half the teacher's estimated latency on
jetson-orin-nano, the found student after full KD is at least as accurate as the best hand-picked
zoo student that fits the same budget (after the same full KD).

    python benchmarks/search_cifar10.py [--data ../shared/data/cifar10] [--teacher-arch resnet56]
        [--trials 20] [--kd-epochs 15] [--train-samples 20000] [--quick]

Steps (each cached under benchmarks/work/search_cifar10/, so a rerun continues):
1. a teacher trained with ``edgekd train-teacher`` (or ``--teacher CKPT``);
2. the pipeline's ``teacher`` and ``search`` stages with target jetson-orin-nano (its INT8
   precision) and ``search.latency_ratio 0.5``: NNI regularized evolution, candidates over budget
   rejected before training, the rest scored by a short KD proxy; the hand-picked CIFAR zoo
   students (resnet8/14/20, resnet8x4, wrn_16_1/2, mobilenetv2) are estimated and those that fit
   get the same proxy;
3. full KD (``kd_cifar10.py``'s recipe: SGD 0.1 cosine, batch 128, 0.1 CE + 0.9 KD at T=4, crop +
   flip) of the best *searched* student and of the best hand-picked student that fits, from the
   same seed, evaluated on the 10,000 test images at the last epoch.
Writes ``benchmarks/results/search_cifar10.md`` (+ ``.json``). Latencies are modelled (the latency
model's roofline/LUT estimate for the Jetson), not measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import kd_setup  # noqa: E402

from edgekd.bench import host_description  # noqa: E402
from edgekd.config import AugmentConfig, DistillConfig, MethodConfig, build_config  # noqa: E402
from edgekd.console import Reporter  # noqa: E402
from edgekd.data import augment_kwargs, load_data  # noqa: E402
from edgekd.distill.methods import build_method  # noqa: E402
from edgekd.distill.trainer import evaluate, resolve_device, train  # noqa: E402
from edgekd.io import atomic_write_json, atomic_write_text  # noqa: E402
from edgekd.models import count_parameters, create_model  # noqa: E402
from edgekd.models.checkpoint import load_model_file  # noqa: E402
from edgekd.pipeline import RunDir, run_stages_in  # noqa: E402
from edgekd.stages.common import normalization_from_teacher_json  # noqa: E402

FULL = {
    "teacher_epochs": 30,
    "trials": 20,
    "proxy_epochs": 3,
    "proxy_train": 5000,
    "proxy_val": 5000,
    "kd_epochs": 15,
    "train": 20000,
}
QUICK = {
    "teacher_epochs": 1,
    "trials": 2,
    "proxy_epochs": 1,
    "proxy_train": 200,
    "proxy_val": 200,
    "kd_epochs": 1,
    "train": 1000,
}


def teacher_checkpoint(args, work: Path, budget: dict) -> Path:
    if args.teacher:
        return args.teacher.resolve()
    path = work / f"teacher_{args.teacher_arch}_{budget['teacher_epochs']}ep_{budget['train']}.pt"
    if not path.is_file():
        print(f"teacher: training {args.teacher_arch} for {budget['teacher_epochs']} epochs", flush=True)
        cmd = [sys.executable, "-m", "edgekd", "train-teacher", "--arch", args.teacher_arch, "--data", str(args.data)]
        cmd += ["--epochs", str(budget["teacher_epochs"]), "--lr", "0.1", "--batch-size", "128"]
        cmd += ["--max-train-samples", str(budget["train"]), "--device", "cpu", "--out", str(path), "--quiet"]
        subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    return path


def search(args, work: Path, teacher: Path, budget: dict) -> RunDir:
    b = budget
    run = RunDir(work / f"run_{b['trials']}t_{b['proxy_epochs']}x{b['proxy_train']}_v{b['proxy_val']}_s{args.seed}")
    overrides = {
        "teacher.checkpoint": str(teacher),
        "data.source": str(args.data),
        "device": "cpu",
        "target": "jetson-orin-nano",
        "seed": args.seed,
        "search.trials": budget["trials"],
        "search.latency_ratio": 0.5,
        "search.proxy_epochs": budget["proxy_epochs"],
        "search.proxy_train_samples": budget["proxy_train"],
        "search.proxy_val_samples": budget["proxy_val"],
        "search.proxy_batch_size": 64,
        "search.threads": args.threads,
    }
    config = build_config(None, overrides)
    resume = run.exists()
    if (
        resume
        and json.loads((run.path / "manifest.json").read_text())["stages"].get("search", {}).get("status") == "done"
    ):
        run.load_manifest()
        return run
    if resume and not args.resume:
        shutil.rmtree(run.path)
    run_stages_in(run.path, config, ["search"], resume=True, reporter=Reporter())
    run.load_manifest()
    return run


def full_kd(name: str, spec: dict, teacher, data, norm, budget: dict, seed: int, work: Path) -> dict:
    """kd_cifar10.py's recipe; cached per architecture, KD budget and seed."""
    from edgekd.nas.journal import arch_key

    out = work / f"kd_{name}_{arch_key(spec)[:12]}_{budget['train']}x{budget['kd_epochs']}ep_s{seed}.json"
    if out.is_file():
        return json.loads(out.read_text())
    device = resolve_device("cpu")
    torch.manual_seed(seed)
    student = create_model(spec, num_classes=len(data.classes), in_channels=data.input_shape[0])
    cfg = DistillConfig(
        epochs=budget["kd_epochs"],
        batch_size=128,
        lr=0.1,
        weight_decay=5e-4,
        schedule="cosine",
        ce_weight=0.1,
        methods=[MethodConfig(name="kd", weight=0.9, params={"T": 4.0})],
    )
    t0 = time.perf_counter()
    methods = [(build_method("kd", {"T": 4.0}), 0.9)]
    augment = augment_kwargs(AugmentConfig(), data.input_shape)
    result = train(
        kd_setup(student, data, norm, cfg, seed, device, teacher=teacher, methods=methods, augment=augment),
        checkpoint_path=out.with_suffix(".ckpt"),
        resume=True,
        reporter=Reporter(),
        label=f"kd {name}",
    )
    info = {
        "name": name,
        "arch": student.arch_spec,
        "parameters": count_parameters(student),
        "test_top1": result["final"]["val_top1"],
        "seconds": round(time.perf_counter() - t0, 1),
    }
    atomic_write_json(out, info)
    return info


def summarize(runs: list[dict]) -> dict:
    """Full-KD runs of one student over seeds: the mean top-1 is what the acceptance compares."""
    tops = [r["test_top1"] for r in runs]
    mean, std = statistics.fmean(tops), (statistics.stdev(tops) if len(tops) > 1 else 0.0)
    return {
        **runs[0],
        "runs": runs,
        "test_top1": mean,
        "test_top1_std": std,
        "per_seed": " / ".join(f"{100 * t:.2f}" for t in tops),
        "mean_std": f"{100 * mean:.2f} ± {100 * std:.2f}",
        "seconds": sum(r["seconds"] for r in runs) / len(runs),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "cifar10")
    ap.add_argument("--teacher", type=Path, default=None, help="an edgekd teacher checkpoint (skips training one)")
    ap.add_argument("--teacher-arch", default="resnet56")
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--kd-epochs", type=int, default=None)
    ap.add_argument("--train-samples", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="the search's seed (and the data subset's)")
    ap.add_argument(
        "--kd-seeds", type=int, nargs="+", default=None, help="training seeds of the full KD runs (default: --seed)"
    )
    ap.add_argument("--resume", action="store_true", help="continue a cut-off search instead of starting over")
    ap.add_argument("--quick", action="store_true", help="a smoke test: tiny budgets everywhere")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "work" / "search_cifar10")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    budget = dict(QUICK if args.quick else FULL)
    for key, value in (("trials", args.trials), ("kd_epochs", args.kd_epochs), ("train", args.train_samples)):
        if value is not None:
            budget[key] = value
    work = args.work / ("quick" if args.quick else "full")
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    teacher_path = teacher_checkpoint(args, work, budget)
    timings["teacher"] = time.perf_counter() - t0
    run = search(args, work, teacher_path, budget)
    timings["search"] = run.stage_record("search")["seconds"]
    m = run.stage_record("search")["metrics"]
    records = [json.loads(x) for x in (run.path / "search" / "trials.jsonl").read_text().splitlines()]
    fits = [r for r in records if r["status"] == "trained" and r["latency_ms"] <= m["budget_ms"]]
    best_nas = max((r for r in fits if r["kind"] == "nas"), key=lambda r: (r["proxy_top1"], -r["latency_ms"]))
    zoo_fits = [r for r in fits if r["kind"] == "zoo"]
    if not zoo_fits:
        raise SystemExit(
            f"no hand-picked zoo student fits the budget of {m['budget_ms']:.4f} ms: nothing to compare with; "
            "use a slower teacher (e.g. --teacher-arch resnet56)"
        )
    best_zoo = max(zoo_fits, key=lambda r: (r["proxy_top1"], -r["latency_ms"]))

    loaded_teacher = load_model_file(teacher_path)
    teacher_arch = (loaded_teacher.arch or {}).get("name", args.teacher_arch)
    teacher = loaded_teacher.model.eval()
    data = load_data(str(args.data), val_fraction=0.2, seed=args.seed, max_train_samples=budget["train"])
    norm = normalization_from_teacher_json(run.path / "teacher")
    t1 = time.perf_counter()
    seeds = args.kd_seeds or [args.seed]
    found = summarize([full_kd("found", best_nas["arch"], teacher, data, norm, budget, s, work) for s in seeds])
    zoo = summarize([full_kd(best_zoo["name"], best_zoo["arch"], teacher, data, norm, budget, s, work) for s in seeds])
    # the runs' own training time (a cached run counts the time it took when it ran)
    timings["full_kd"] = sum(r["seconds"] for x in (found, zoo) for r in x["runs"])
    timings["this_invocation"] = time.perf_counter() - t1
    teacher_top1 = evaluate(teacher, data.val, norm, torch.device("cpu"))["top1"]
    ok = found["test_top1"] >= zoo["test_top1"]
    lines = [
        "# Student search on CIFAR-10 (jetson-orin-nano budget)",
        "",
        f"Command: `python benchmarks/search_cifar10.py{' '.join([''] + sys.argv[1:])}` "
        f"(teacher {teacher_arch}, budget {budget})",
        f"Machine: {host_description()}; torch threads {args.threads}.",
        "",
        f"- Teacher: {teacher_path.name}, test top-1 {100 * teacher_top1:.2f}%, estimated "
        f"{m['teacher_latency_ms']:.4f} ms on jetson-orin-nano ({m['precision']}, batch 1, {m['latency_source']}; "
        "modelled).",
        f"- Budget: 0.5 x teacher = {m['budget_ms']:.4f} ms (modelled). Search: NNI {m['strategy']}, "
        f"{m['trials_trained']} trials trained, {m['trials_rejected']} rejected before training, "
        f"{timings['search']:.0f} s.",
        f"- Proxy: {m['proxy']}",
        "",
        f"| student | source | params | est. latency ms | proxy top-1 (%) | full-KD test top-1 (%), seeds {seeds} "
        "| mean ± std | KD time s per run |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        f"| {best_nas['name']} (found) | search | {found['parameters']:,} | {best_nas['latency_ms']:.4f} | "
        f"{100 * best_nas['proxy_top1']:.2f} | {found['per_seed']} | {found['mean_std']} | {found['seconds']:.0f} |",
        f"| {best_zoo['name']} | best hand-picked that fits | {zoo['parameters']:,} | {best_zoo['latency_ms']:.4f} | "
        f"{100 * best_zoo['proxy_top1']:.2f} | {zoo['per_seed']} | {zoo['mean_std']} | {zoo['seconds']:.0f} |",
        "",
        f"- [{'x' if ok else ' '}] found student after full KD >= best hand-picked zoo student under the same budget "
        f"(mean over {len(seeds)} seed(s): {100 * found['test_top1']:.2f}% vs {100 * zoo['test_top1']:.2f}%)",
        "",
        f"Full KD: {budget['kd_epochs']} epochs on {budget['train']} training images (kd_cifar10.py's recipe), "
        "top-1 on the 10,000 test images at the last epoch.",
        f"Wall times: {', '.join(f'{k} {v:.0f} s' for k, v in timings.items() if k != 'this_invocation')}; "
        f"this invocation {time.perf_counter() - t0:.0f} s (cached steps are not rerun).",
        "",
        f"Found architecture: `{json.dumps(best_nas['arch'])}`",
        "",
    ]
    name = "search_cifar10_quick" if args.quick else "search_cifar10"
    args.results.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.results / f"{name}.md", "\n".join(lines))
    atomic_write_json(
        args.results / f"{name}.json",
        {"budget": budget, "search": m, "found": found, "zoo": zoo, "timings": timings, "passed": ok},
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
