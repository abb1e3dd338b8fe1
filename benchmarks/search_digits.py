"""Search acceptance on digits: 20 trials in under 10 minutes on 2 CPU cores; the found student
meets the budget and scores at least as well as the best hand-picked zoo model under that budget
on the same proxy.

    python benchmarks/search_digits.py [--trials 20] [--strategy evolution] [--target x86-cpu]
                                       [--latency-ratio 0.5] [--threads 1] [--quick]

Trains (once, cached under benchmarks/work/) the demo teacher, cnn_medium for 30 epochs on
scikit-learn's digits, then runs the pipeline's ``teacher`` and ``search`` stages in a fresh run
directory and writes ``benchmarks/results/search_digits.md`` (+ ``.json``): the budget, the search
wall time (the search stage's own time, from the manifest), the trials, and the found student
next to the hand-picked zoo students, all scored by the same proxy (short KD from the teacher).
Latencies are the latency model's estimates for the target (modelled, not measured).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgekd.bench import host_description  # noqa: E402
from edgekd.config import build_config  # noqa: E402
from edgekd.console import Reporter  # noqa: E402
from edgekd.io import atomic_write_json, atomic_write_text  # noqa: E402
from edgekd.pipeline import RunDir, Runner  # noqa: E402


def train_teacher(path: Path, epochs: int, threads: int) -> None:
    if path.is_file():
        return
    cmd = [sys.executable, "-m", "edgekd", "train-teacher", "--arch", "cnn_medium", "--data", "digits"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run([*cmd, "--epochs", str(epochs), "--out", str(path), "--quiet"], check=True, cwd=ROOT, env=env)


def run_search(work: Path, overrides: dict, reporter: Reporter) -> RunDir:
    run_path = work / "run"
    shutil.rmtree(run_path, ignore_errors=True)
    config = build_config(None, overrides)
    run = RunDir(run_path)
    run.lock()
    try:
        run.init_manifest(config)
        run.write_config(config)
        Runner(run, config, reporter).run_stages(["search"], resume=False)
    finally:
        run.unlock()
    run.load_manifest()
    return run


def table(records: list[dict], budget: float) -> list[str]:
    rows = [
        "| candidate | kind | params | FLOPs | est. latency ms | fits budget | proxy top-1 (%) |",
        "|---|---|---:|---:|---:|:---:|---:|",
    ]
    for r in records:
        top1 = f"{100 * r['proxy_top1']:.2f}" if r.get("proxy_top1") is not None else "-"
        rows.append(
            f"| {r['name']} | {r['kind']} | {r['parameters']:,} | {r['flops'] / 1e6:.2f}M | {r['latency_ms']:.4f} | "
            f"{'yes' if r['latency_ms'] <= budget else 'no'} | {top1} |"
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--strategy", default="evolution", choices=["evolution", "random", "tpe"])
    ap.add_argument("--target", default="x86-cpu")
    ap.add_argument("--latency-ratio", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 suits these tiny models)")
    ap.add_argument("--proxy-epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="3 trials, 1 proxy epoch (a smoke test)")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "work" / "search_digits")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    if args.quick:
        args.trials, args.proxy_epochs = 3, 1
    args.work.mkdir(parents=True, exist_ok=True)
    teacher = args.work / "teacher_cnn_medium_30ep.pt"
    train_teacher(teacher, 30, args.threads)
    torch.set_num_threads(args.threads)
    overrides = {
        "teacher.checkpoint": str(teacher),
        "data.source": "digits",
        "target": args.target,
        "seed": args.seed,
        "search.trials": args.trials,
        "search.strategy": args.strategy,
        "search.latency_ratio": args.latency_ratio,
        "search.threads": args.threads,
        "search.proxy_epochs": args.proxy_epochs,
    }
    load_start = os.getloadavg()[0]
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    run = run_search(args.work, overrides, Reporter())
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu_seconds = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)  # teacher + search stages
    record = run.stage_record("search")
    m = record["metrics"]
    records = [json.loads(line) for line in (run.path / "search" / "trials.jsonl").read_text().splitlines()]
    trained = [r for r in records if r["status"] == "trained"]
    nas = sorted((r for r in trained if r["kind"] == "nas"), key=lambda r: (-r["proxy_top1"], r["latency_ms"]))
    zoo = [r for r in records if r["kind"] == "zoo"]
    budget = m["budget_ms"]
    seconds = record["seconds"]
    checks = {
        f"{args.trials} trials trained": m["trials_trained"] == args.trials,
        "search stage under 10 minutes (wall)": seconds < 600,
        "found student meets the budget": m["best_search_proxy_top1"] is not None and nas[0]["latency_ms"] <= budget,
        "found student >= best hand-picked zoo model under the budget (same proxy)": bool(m["search_beats_zoo"]),
    }
    lines = [
        "# Student search on digits",
        "",
        f"Command: `python benchmarks/search_digits.py --trials {args.trials} --strategy {args.strategy} "
        f"--target {args.target} --latency-ratio {args.latency_ratio} --threads {args.threads} "
        f"--proxy-epochs {args.proxy_epochs}`{' --quick' if args.quick else ''}",
        f"Machine: {host_description()}; torch threads {args.threads}. Load average (1 min) {load_start:.1f} at the "
        f"start, {os.getloadavg()[0]:.1f} at the end: above about 2 other jobs shared the 2 cores, and the times are "
        "upper bounds.",
        "",
        f"- Teacher: cnn_medium, 30 epochs on digits; estimated latency {m['teacher_latency_ms']:.4f} ms on "
        f"{args.target} ({m['precision']}, batch 1, {m['latency_source']}: modelled, not measured).",
        f"- Budget: {args.latency_ratio} x teacher = {budget:.4f} ms. Candidates over it were rejected before training "
        f"({m['trials_rejected']} distinct ones).",
        f"- Strategy: NNI {args.strategy}, sequential engine; {m['trials_trained']} trials trained; search stage "
        f"{seconds:.1f} s wall ({seconds / 60:.1f} min); CPU time of the teacher + search stages "
        f"{cpu_seconds:.1f} s (user + system, all threads; the wall time includes waiting for other jobs' CPU).",
        f"- Proxy: {m['proxy']['epochs']} epochs of KD ({m['proxy']['loss']}) on {m['proxy']['train_samples']} "
        f"training images, top-1 on {m['proxy']['val_samples']} validation images.",
        f"- Found: {m['best']} ({m['best_source']}), proxy top-1 {100 * m['best_proxy_top1']:.2f}% at "
        f"{m['best_latency_ms']:.4f} ms; best hand-picked under the budget: {m['best_zoo']} "
        f"({100 * (m['best_zoo_proxy_top1'] or 0):.2f}%).",
        "",
        "## Acceptance",
        "",
        *[f"- [{'x' if ok else ' '}] {name}" for name, ok in checks.items()],
        "",
        "## Hand-picked zoo students and the 5 best found (same proxy)",
        "",
        *table(zoo + nas[:5], budget),
        "",
        f"Found architecture: `{json.dumps(nas[0]['arch']) if nas else '-'}`",
        "",
    ]
    args.results.mkdir(parents=True, exist_ok=True)
    name = "search_digits_quick" if args.quick else "search_digits"
    atomic_write_text(args.results / f"{name}.md", "\n".join(lines))
    atomic_write_json(
        args.results / f"{name}.json",
        {
            "metrics": m,
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "checks": checks,
            "records": [r for r in records if r["status"] != "rejected"],
        },
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
