"""The method library on real CIFAR-10 under one fixed CPU budget: the same teacher and student,
every kind of knowledge, >= 2 seeds.

    python benchmarks/kd_cifar10.py [--data ../shared/data/cifar10] [--seeds 0 1] [--rows KD DKD ...]
    python benchmarks/kd_cifar10.py --train-samples 10000 --epochs 8 --teacher-epochs 20   # a smaller budget
    python benchmarks/kd_cifar10.py --smoke     # 1 epoch, 512 images, 1 seed: proves the script, estimates the full run

Trains one teacher on a larger budget than the students get (cached under benchmarks/work/ and
reused by every row and every later invocation), then for every seed and every row of ``METHODS``
trains the student from the same initial weights and data order, and writes
``benchmarks/results/kd_cifar10.md`` (+ ``.json``): top-1 on the 10,000 CIFAR-10 test images at
the last epoch (RepDistiller's convention), per seed, mean ± std, the gain over the vanilla student,
and the wall time per run, plus the teacher-vs-student check (the teacher must be clearly stronger
than the student alone, see issue 3 section 5). Finished runs are cached, so a rerun after an
interruption continues where it stopped.

Rows name methods (``edgekd.distill.methods``, reference weights from REFERENCES.md) or a scheme
(``distill.scheme``: ``dml``, ``byot``, from ``edgekd.distill.schemes``); a row whose method or
scheme is not registered in this checkout is skipped with the reason printed and written.
Budget adaptations, said plainly: DKD's warm-up is scaled with the budget (mdistiller: 20 of 240
epochs, here 20/240 of the student epochs rounded up: 2 at 15 epochs) and uses beta 2, mdistiller's
setting for CIFAR ResNet pairs (resnet56 ->
resnet20, resnet110 -> resnet32); every other row uses the reference settings unchanged.

Warm-up ramp rows (issue 19): at the reference weights AT, RKD and CRD outweigh CE many times over
at the start and fall below the vanilla student under a short budget. The rows marked "ramp" train
the same method with ``distill.feature_warmup_epochs`` = ``--ramp-epochs`` (default 2): its weight
grows linearly per step from 0 to the reference weight over those epochs
(``edgekd.distill.trainer.ramp_factor``); the reference-setting rows stay beside them. CRD's
negatives: the reference draws K = 16384 from 50,000 images; edgekd now keeps that K/N (0.33) on any
set (3,277 on 10,000). The row "CRD (0.8)" keeps the earlier setting, K = 16384 clipped to N - 1
(9,999: K/N 1.0), labelled so; the ramp row uses the scaled default (K/N 0.33).

Recorded runs: a run missing from benchmarks/work/ is taken from the previous results file
(``benchmarks/results/kd_cifar10.json``) when that file's budget, teacher top-1 and the row's
methods and CE weight are the same (the run would be recomputed identically), and it says so.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import kd_setup  # noqa: E402

from edgekd.bench import host_description  # noqa: E402
from edgekd.config import AugmentConfig, DistillConfig, MethodConfig  # noqa: E402
from edgekd.data import Split, augment_kwargs, compute_normalization, load_data  # noqa: E402
from edgekd.distill.crd import scaled_k  # noqa: E402
from edgekd.distill.methods import build_method, default_ce_weight, method_class, method_names  # noqa: E402
from edgekd.distill.trainer import evaluate, train  # noqa: E402
from edgekd.io import atomic_write_json, atomic_write_text  # noqa: E402
from edgekd.models import create_model  # noqa: E402
from edgekd.models.checkpoint import save_model  # noqa: E402

# The budget (2-core CPU): a 20,000-image training subset, 15 student epochs, SGD + cosine; the
# teacher gets twice the epochs (a larger budget, trained once and reused).
BUDGET = {
    "teacher": "resnet20",
    "student": "resnet8",
    "train_samples": 20000,
    "val_samples": None,  # all 10,000 test images
    "teacher_epochs": 30,
    "student_epochs": 15,
    "batch_size": 128,
    "lr": 0.1,
    "weight_decay": 5e-4,
    "schedule": "cosine",
}
SMOKE = {**BUDGET, "train_samples": 512, "val_samples": 512, "teacher_epochs": 1, "student_epochs": 1}


def _m(name: str, weight: float | None = None, **params: Any) -> MethodConfig:
    return MethodConfig(
        name=name, weight=method_class(name).default_weight if weight is None else weight, params=params
    )


def _row(
    kind: str,
    methods: list[tuple[str, float | None, dict]] | None = None,
    scheme: str | None = None,
    setting: str = "reference",
    ramp: bool = False,
    **kw,
):
    """A row: ``setting`` labels it in the table; ``ramp`` trains with distill.feature_warmup_epochs =
    --ramp-epochs; ``recorded_as`` (optional) is the methods list under which the previous results
    file recorded the same computation (before a default changed)."""
    return {"kind": kind, "methods": methods or [], "scheme": scheme, "setting": setting, "ramp": ramp, **kw}


RAMP_EPOCHS = 2.0


# Rows: name -> what to train. ``methods`` entries are (method, weight or None for the reference
# weight, params); the CE weight follows ``default_ce_weight`` (0.1 with KD alone, else 1).
METHODS: dict[str, dict[str, Any]] = {
    "vanilla student (CE only)": _row("-"),
    "KD (T 4; 0.1 CE + 0.9 KD)": _row("response", [("kd", None, {"T": 4.0})]),
    "DKD (alpha 1, beta 2, T 4)": _row("response", [("dkd", None, {"alpha": 1.0, "beta": 2.0, "T": 4.0, "warmup": 2})]),
    "FitNet (100)": _row("feature", [("fitnet", None, {})]),
    "AT (1000)": _row("feature", [("at", None, {})]),
    "AT (1000) + ramp": _row("feature", [("at", None, {})], setting="ramp", ramp=True),
    "SP (3000)": _row("relation", [("sp", None, {})]),
    "RKD (1; 25 dist, 50 angle)": _row("relation", [("rkd", None, {})]),
    "RKD (1; 25 dist, 50 angle) + ramp": _row("relation", [("rkd", None, {})], setting="ramp", ramp=True),
    "PKT (30000)": _row("relation", [("pkt", None, {})]),
    "NST (50)": _row("feature", [("nst", None, {})]),
    # nce_k 16384 on 10,000 images is clipped to 9,999: the setting of the earlier table, recorded then
    # with params {} (the default K was 16384 before it scaled with the dataset).
    "CRD (0.8)": _row(
        "contrastive",
        [("crd", None, {"nce_k": 16384})],
        setting="reference K 16384, clipped to N-1 (K/N 1.0)",
        recorded_as=[{"name": "crd", "weight": 0.8, "params": {}}],
    ),
    "CRD (0.8; K/N 0.33) + ramp": _row("contrastive", [("crd", None, {})], setting="K/N 0.33 + ramp", ramp=True),
    "DML (2 peers, no teacher)": _row("online scheme", scheme="dml"),
    "self-distillation (BYOT)": _row("self scheme", scheme="byot"),
    "KD + AT + RKD (0.9, 1000, 1; CE 1)": _row("combination", [("kd", None, {}), ("at", None, {}), ("rkd", None, {})]),
}


def _config(budget: dict, epochs: int, ce_weight: float, methods: list[MethodConfig], **extra) -> DistillConfig:
    return DistillConfig(
        epochs=epochs,
        batch_size=budget["batch_size"],
        lr=budget["lr"],
        weight_decay=budget["weight_decay"],
        schedule=budget["schedule"],
        ce_weight=ce_weight,
        methods=methods,
        channels_last=False,  # NCHW fp32: the setting every recorded row of the table was trained in
        **extra,
    )


def unavailable(row: dict[str, Any]) -> str | None:
    """Why a row cannot run in this checkout (None: it can)."""
    missing = [name for name, _, _ in row["methods"] if name not in method_names()]
    if missing:
        return f"method(s) {', '.join(missing)} not registered"
    if row["scheme"] is not None:
        try:
            from edgekd.distill.schemes import scheme_names
        except ImportError:
            return f"scheme {row['scheme']!r}: edgekd.distill.schemes is not in this checkout (branch issue3-schemes)"
        if row["scheme"] not in scheme_names():
            return f"scheme {row['scheme']!r} not registered (have {', '.join(scheme_names())})"
        if "scheme" not in DistillConfig.model_fields:
            return "DistillConfig has no 'scheme' field in this checkout"
    return None


def _subset(split: Split, n: int | None) -> Split:
    """A seeded random subset (the test file is sorted by class: its head is one class)."""
    if n is None or n >= len(split) or split.images is None:
        return split
    pick = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))[:n]
    return Split(images=split.images[pick], labels=split.labels[pick])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cifar10"))
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 0 1 (smoke: 0)")
    ap.add_argument("--rows", nargs="+", default=None, help="run only rows whose name starts with one of these")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--smoke", action="store_true", help="1 epoch, 512 images, 1 seed; prints a full-run estimate")
    ap.add_argument("--teacher-arch", default=None, help=f"default {BUDGET['teacher']}")
    ap.add_argument("--train-samples", type=int, default=None, help=f"default {BUDGET['train_samples']}")
    ap.add_argument("--epochs", type=int, default=None, help=f"student epochs (default {BUDGET['student_epochs']})")
    ap.add_argument("--teacher-epochs", type=int, default=None, help=f"default {BUDGET['teacher_epochs']}")
    ap.add_argument(
        "--ramp-epochs", type=float, default=RAMP_EPOCHS, help=f"warm-up of the ramp rows (default {RAMP_EPOCHS:g})"
    )
    ap.add_argument(
        "--results",
        default="kd_cifar10",
        help="name of the results files under benchmarks/results/ (default kd_cifar10: the full table; use "
        "another name for a subset of rows so the full table is not replaced by it)",
    )
    args = ap.parse_args()
    budget = dict(SMOKE if args.smoke else BUDGET)
    for key, value in (
        ("teacher", args.teacher_arch),
        ("train_samples", args.train_samples),
        ("student_epochs", args.epochs),
        ("teacher_epochs", args.teacher_epochs),
    ):
        if value is not None:
            budget[key] = value
    # DKD's warm-up scales with the budget: mdistiller's 20 of 240 epochs, rounded up
    dkd = METHODS["DKD (alpha 1, beta 2, T 4)"]["methods"][0][2]
    dkd["warmup"] = max(1, -(-20 * budget["student_epochs"] // 240))
    args.seeds = args.seeds or ([0] if args.smoke else [0, 1])
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = "kd_cifar10_methods_smoke" if args.smoke else "kd_cifar10_methods"
    if not args.smoke and budget != BUDGET:  # every budget caches its own teacher and runs
        name += (
            f"_{budget['train_samples']}x{budget['student_epochs']}ep_{budget['teacher']}_{budget['teacher_epochs']}ep"
        )
    work = ROOT / "benchmarks" / "work" / name
    work.mkdir(parents=True, exist_ok=True)

    data = load_data(args.data, seed=0, max_train_samples=budget["train_samples"])
    data.val = _subset(data.val, budget["val_samples"])
    norm = compute_normalization(data.train)
    aug = augment_kwargs(AugmentConfig(), data.input_shape)
    n_classes, channels = len(data.classes), data.input_shape[0]
    print(f"data: {len(data.train)} train / {len(data.val)} test images ({data.val_source})", flush=True)

    def setup(model, methods, cfg, seed=0, teacher=None):
        return kd_setup(model, data, norm, cfg, seed, device, teacher=teacher, methods=methods, augment=aug)

    t0 = time.perf_counter()
    teacher_path = work / "teacher.pt"
    torch.manual_seed(0)
    teacher = create_model(budget["teacher"], num_classes=n_classes, in_channels=channels)
    if teacher_path.is_file():
        teacher.load_state_dict(torch.load(teacher_path, weights_only=True))
        teacher_info = json.loads((work / "teacher.json").read_text())
        print(f"teacher: reusing {teacher_path}", flush=True)
    else:
        print(f"teacher: training {budget['teacher']} for {budget['teacher_epochs']} epochs", flush=True)
        result = train(
            setup(teacher, [], _config(budget, budget["teacher_epochs"], 1.0, [])),
            checkpoint_path=work / "teacher_last.ckpt",
            resume=True,
            label="teacher",
        )
        torch.save(teacher.state_dict(), teacher_path)
        # the same weights in edgekd's checkpoint format, for `--teacher` of the CLI and search_cifar10.py
        spec = {"shape": list(data.input_shape), "mean": norm.mean, "std": norm.std}
        save_model(work / "teacher_edgekd.pt", teacher, input_spec=spec, classes=data.classes)
        teacher_info = {"seconds": result["seconds"], "epochs": budget["teacher_epochs"]}
        atomic_write_json(work / "teacher.json", teacher_info)
    teacher = teacher.to(device).eval()
    teacher_info["top1"] = evaluate(teacher, data.val, norm, device)["top1"]
    print(f"teacher: {100 * teacher_info['top1']:.2f}%", flush=True)

    rows = {n: r for n, r in METHODS.items() if not args.rows or any(n.startswith(p) for p in args.rows)}
    skipped = {n: why for n, r in rows.items() if (why := unavailable(r))}
    for name, why in skipped.items():
        print(f"skip: {name}: {why}", flush=True)
    runs: dict[str, dict[int, dict]] = {}
    for seed in args.seeds:
        for name, row in rows.items():
            if name in skipped:
                continue
            key = f"{name}-seed{seed}" + (f"-ramp{args.ramp_epochs:g}" if row["ramp"] else "")
            cache = work / ("".join(c if c.isalnum() else "_" for c in key) + ".json")
            if cache.is_file():
                runs.setdefault(name, {})[seed] = json.loads(cache.read_text())
                continue
            recorded = recorded_run(name, row, seed, budget, teacher_info)
            if recorded is not None:
                print(f"student: {name}, seed {seed}: the run recorded in {PREVIOUS.name} (same settings)", flush=True)
                runs.setdefault(name, {})[seed] = recorded
                continue
            print(f"student: {name}, seed {seed}", flush=True)
            ramp = args.ramp_epochs if row["ramp"] else 0.0
            record = run_row(row, budget, seed, teacher, data, norm, aug, device, setup, n_classes, channels, ramp)
            print(
                f"  -> {100 * record['top1']:.2f}% in {record['seconds']:.0f}s "
                f"({record['seconds_per_epoch']:.1f}s/epoch)",
                flush=True,
            )
            atomic_write_json(cache, record)
            runs.setdefault(name, {})[seed] = record

    wall = time.perf_counter() - t0
    if args.smoke:
        print_estimate(runs, teacher_info, skipped, data, args)
        return
    write_results(budget, teacher_info, runs, skipped, wall, args, data)


PREVIOUS = ROOT / "benchmarks" / "results" / "kd_cifar10.json"
_previous: dict | None = None


def recorded_run(name: str, row: dict, seed: int, budget: dict, teacher_info: dict) -> dict | None:
    """The run of row ``name`` and ``seed`` in the previous results file, if it was made with this
    budget, a teacher of the same top-1 and the row's methods and CE weight; else None."""
    global _previous
    if _previous is None:
        _previous = json.loads(PREVIOUS.read_text()) if PREVIOUS.is_file() else {}
    prev = _previous
    run = prev.get("runs", {}).get(name, {}).get(str(seed))
    if run is None or prev.get("budget") != budget or row["ramp"]:
        return None
    if prev.get("teacher", {}).get("top1") != teacher_info.get("top1"):
        return None
    methods = [_m(n, w, **p).model_dump() for n, w, p in row["methods"]]
    if run.get("methods") not in (methods, row.get("recorded_as")):
        return None
    if run.get("ce_weight") != default_ce_weight([m["name"] for m in methods]):
        return None
    return {**run, "recorded": PREVIOUS.name}


def run_row(row, budget, seed, teacher, data, norm, aug, device, setup, n_classes, channels, ramp=0.0) -> dict:
    methods_cfg = [_m(n, w, **p) for n, w, p in row["methods"]]
    ce = default_ce_weight([m.name for m in methods_cfg])
    cfg = _config(budget, budget["student_epochs"], ce, methods_cfg, feature_warmup_epochs=ramp)

    def new_student():
        torch.manual_seed(seed)
        return create_model(budget["student"], num_classes=n_classes, in_channels=channels)

    if row["scheme"] is None:
        student = new_student()
        built = [(build_method(m.name, m.params), m.weight) for m in methods_cfg]
        result = train(setup(student, built, cfg, seed, teacher))
    else:  # a scheme of the issue3-schemes branch, through its own entry point
        from edgekd.distill.schemes import SchemeJob, build_scheme

        cfg = cfg.model_copy(update={"scheme": row["scheme"], "ce_weight": 1.0})
        scheme = build_scheme(row["scheme"])

        def make_setup(st, ms, c):
            return setup(st, ms, c, seed, teacher)

        job_teacher = teacher if scheme.uses_teacher else None
        job = SchemeJob(cfg, data, norm, device, seed, new_student, make_setup, job_teacher, augment=aug)
        outcome = scheme.run(job)
        student, result = outcome.student, outcome.result
    # the evaluation's share of each epoch, to scale smoke timings to the full budget
    t = time.perf_counter()
    evaluate(student, data.val, norm, device)
    eval_seconds = time.perf_counter() - t
    return {
        "top1": result["final"]["val_top1"],
        "best_top1": result["best"]["val_top1"],
        "seconds": result["seconds"],
        "seconds_per_epoch": result["seconds"] / result["epochs"],
        "eval_seconds": eval_seconds,
        "threads": torch.get_num_threads(),
        "train_samples": len(data.train),
        "val_samples": len(data.val),
        "ce_weight": cfg.ce_weight,
        "methods": [m.model_dump() for m in methods_cfg],
        "feature_warmup_epochs": ramp,
    }


def print_estimate(runs, teacher_info, skipped, data, args) -> None:
    """Estimate the full run (MODELLED, not measured). A smoke epoch is mostly fixed overhead, so
    its time does not scale with the images; instead each row's training time is taken relative to
    the vanilla row's in this smoke run, and anchored to the vanilla student's and the teacher's
    per-epoch times measured at the full budget by the previous results file (same script, same
    data subset, same machine), when there is one."""
    previous = ROOT / "benchmarks" / "results" / "kd_cifar10.json"
    anchor_student = anchor_teacher = None
    if previous.is_file():
        prev = json.loads(previous.read_text())
        base = next(iter(prev["runs"].values()))
        anchor_student = min(r["seconds"] for r in base.values()) / prev["budget"]["student_epochs"]
        anchor_teacher = prev["teacher"]["seconds"] / prev["budget"]["teacher_epochs"]
    vanilla = runs.get(next(iter(METHODS)), {}).get(args.seeds[0])
    if vanilla is None or anchor_student is None:
        print("no estimate: needs the vanilla row and a previous full-budget results file")
        return
    v_train = max(vanilla["seconds_per_epoch"] - vanilla["eval_seconds"], 1e-9)
    epochs, seeds = BUDGET["student_epochs"], 2
    print(
        f"\nEstimated full run (MODELLED: per-row cost relative to vanilla in this smoke run x the vanilla "
        f"student's {anchor_student:.1f} s/epoch measured at the full budget in {previous.name}):"
    )
    print(f"| row | smoke train s/epoch | relative cost | est. s/epoch (full) | est. min per run ({epochs} epochs) |")
    print("|---|---:|---:|---:|---:|")
    total = 0.0
    for name, per_seed in runs.items():
        r = per_seed[args.seeds[0]]
        train_part = max(r["seconds_per_epoch"] - r["eval_seconds"], 0.0)
        rel = train_part / v_train
        per_epoch = anchor_student * rel
        total += per_epoch * epochs * seeds / 60
        print(f"| {name} | {train_part:.1f} | {rel:.2f} | {per_epoch:.0f} | {per_epoch * epochs / 60:.1f} |")
    teacher_min = anchor_teacher * BUDGET["teacher_epochs"] / 60
    print(
        f"Teacher ({BUDGET['teacher']}, {BUDGET['teacher_epochs']} epochs, once): ~{teacher_min:.0f} min. "
        f"Students, {len(runs)} rows x {seeds} seeds: ~{total:.0f} min ({total / 60:.1f} h); skipped here (add "
        f"their cost): {', '.join(skipped) or 'none'}. CRD's K scales with the set (or is clipped to it), so "
        "its estimate is low."
    )


def _threads_note(runs: dict, default: int) -> str:
    used = sorted({r.get("threads", default) for per_seed in runs.values() for r in per_seed.values()})
    if used == [1]:
        return "1 torch thread per run (other processes shared the 2 cores, so wall times are upper bounds)"
    return f"{'/'.join(map(str, used or [default]))} torch thread(s) per run"


def _stats(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def _provenance(args, budget, teacher_info) -> list[str]:
    """Lines that say how this table relates to the full one: a subset (``--results``), and a teacher
    that differs from the one the recorded runs used (then none of them were reused)."""
    lines = []
    if args.results != "kd_cifar10":
        lines.append(
            f"A subset of the rows of `kd_cifar10.md` ({args.results}.md), run on its own; compare its rows with "
            "each other, not with that table's."
        )
    prev = json.loads(PREVIOUS.read_text()) if PREVIOUS.is_file() else {}
    prev_top1 = prev.get("teacher", {}).get("top1")
    if prev.get("budget") == budget and prev_top1 is not None and prev_top1 != teacher_info.get("top1"):
        lines.append(
            f"The teacher was retrained for this run with the same command and seed on another machine and scored "
            f"{100 * teacher_info['top1']:.2f}% (the recorded table's teacher: {100 * prev_top1:.2f}%), so no "
            f"recorded run was reused: every row here, the vanilla and reference-setting rows included, ran "
            "against this teacher."
        )
    return [*lines, ""] if lines else []


def write_results(budget, teacher_info, runs, skipped, wall, args, data) -> None:
    host = host_description()
    n_train = len(data.train)
    base_name = next(iter(METHODS))
    complete = {n: r for n, r in runs.items() if all(s in r for s in args.seeds)}
    base = [complete[base_name][s]["top1"] for s in args.seeds] if base_name in complete else None
    lines = [
        "# Distillation methods on CIFAR-10 under one fixed CPU budget",
        "",
        *_provenance(args, budget, teacher_info),
        f"Teacher {budget['teacher']} ({100 * teacher_info['top1']:.2f}% top-1, trained once for "
        f"{budget['teacher_epochs']} epochs), student {budget['student']} in every row; {budget['train_samples']} "
        f"training images (seeded stratified subset of the 50,000), evaluated on the {len(data.val)} CIFAR-10 test "
        f"images; {budget['student_epochs']} student epochs, batch {budget['batch_size']}, SGD lr {budget['lr']} "
        f"{budget['schedule']}, weight decay {budget['weight_decay']}; crop + flip augmentation. Top-1 at the last "
        f"epoch (RepDistiller's convention), seeds {args.seeds}. Weights are the references' (REFERENCES.md) with "
        "CE weight 1, except KD alone (0.1 CE + 0.9 KD); DKD: beta 2 (mdistiller's CIFAR-ResNet setting), warm-up "
        f"scaled to {METHODS['DKD (alpha 1, beta 2, T 4)']['methods'][0][2]['warmup']} epoch(s) (20/240 of the budget, "
        'rounded up). Setting "ramp": distill.feature_warmup_epochs = '
        f"{args.ramp_epochs:g} (the weight grows linearly per step from 0 to the reference weight over the first "
        f'{args.ramp_epochs:g} epochs), beside the reference-setting row of the same method. CRD: "K/N 0.33" keeps '
        f"the reference's 16384 negatives per 50,000 images ({scaled_k(n_train):,} here); the reference-setting row "
        f"clips K 16384 to N-1 = {scaled_k(n_train, 16384):,}.",
        "",
        "| method | knowledge | setting | "
        + " | ".join(f"seed {s}" for s in args.seeds)
        + " | mean ± std | gain vs vanilla (mean ± std) | wall time per run (s) |",
        "|---|---|---|" + "---:|" * (len(args.seeds) + 3),
    ]
    verdicts = []
    for name, per_seed in complete.items():
        vals = [per_seed[s]["top1"] for s in args.seeds]
        mean, sd = _stats(vals)
        gain = "-"
        if base is not None and name != base_name:
            gmean, gsd = _stats([v - b for v, b in zip(vals, base, strict=True)])
            gain = f"{100 * gmean:+.2f} ± {100 * gsd:.2f}"
            spread = max(_stats(base)[1], sd)
            verdicts.append((name, gmean, spread))
        secs = statistics.fmean(per_seed[s]["seconds"] for s in args.seeds)
        lines.append(
            f"| {name} | {METHODS[name]['kind']} | {METHODS[name]['setting']} | "
            + " | ".join(f"{100 * v:.2f}" for v in vals)
            + f" | {100 * mean:.2f} ± {100 * sd:.2f} | {gain} | {secs:.0f} |"
        )
    for name, why in skipped.items():
        lines.append(
            f"| {name} | {METHODS[name]['kind']} | {METHODS[name]['setting']} | skipped: {why} |"
            + " |" * (len(args.seeds) + 2)
        )
    lines.append("")
    if base is not None:
        gap = teacher_info["top1"] - _stats(base)[0]
        lines.append(
            f"Teacher check: the teacher is {100 * gap:+.2f} points over the vanilla student "
            + ("(clearly stronger)." if gap > 0.02 else "(NOT clearly stronger: distillation cannot be judged here).")
        )
        if len(args.seeds) < 2:
            lines.append("One seed: there is no seed spread to judge the gains against; each gain is a single run.")
        else:
            helps = [n for n, g, s in verdicts if g > s]
            no_help = [n for n, g, s in verdicts if g <= s]
            lines.append(f"Beat the vanilla student by more than the seed spread: {', '.join(helps) or 'none'}.")
            lines.append(
                "Did not help under this budget (gain within the seed spread, or a loss): "
                f"{', '.join(no_help) or 'none'}."
            )
    recorded = sorted({n for n, per_seed in complete.items() for r in per_seed.values() if r.get("recorded")})
    if recorded:
        lines.append(
            f"Taken from the previous {PREVIOUS.name} (same budget, same teacher top-1, same settings; not rerun): "
            + ", ".join(recorded)
            + f"; they ran on {_previous.get('host', {}).get('cpu', 'an unrecorded machine')}."
        )
    lines += [
        "",
        f"Wall time: {wall / 60:.1f} min for this invocation (cached runs excluded); teacher "
        f"{teacher_info.get('seconds', 0):.0f}s when trained.",
        f"Machine: {host.get('cpu')}, {host.get('logical_cores')} logical cores, torch {torch.__version__}, "
        f"{_threads_note(runs, args.threads)}, device {args.device}; Python {platform.python_version()}.",
        "Data caveat: this CIFAR-10 copy was rebuilt from JPEGs (../shared/data/README.md); compare rows with each "
        "other, not with published CIFAR-10 numbers.",
        "",
        "Command: `python benchmarks/kd_cifar10.py --seeds "
        + " ".join(map(str, args.seeds))
        + (f" --ramp-epochs {args.ramp_epochs:g}" if args.ramp_epochs != RAMP_EPOCHS else "")
        + (" --rows " + " ".join(f"'{r}'" for r in args.rows) if args.rows else "")
        + (f" --results {args.results}" if args.results != "kd_cifar10" else "")
        + "".join(
            f" --{flag} {budget[key]}"
            for flag, key in (
                ("teacher-arch", "teacher"),
                ("train-samples", "train_samples"),
                ("epochs", "student_epochs"),
                ("teacher-epochs", "teacher_epochs"),
            )
            if budget[key] != BUDGET[key]
        )
        + "`",
        "",
    ]
    out = ROOT / "benchmarks" / "results"
    atomic_write_text(out / f"{args.results}.md", "\n".join(lines))
    atomic_write_json(
        out / f"{args.results}.json",
        {
            "budget": budget,
            "teacher": teacher_info,
            "runs": runs,
            "skipped": skipped,
            "seeds": args.seeds,
            "host": host,
            "wall_seconds": wall,
        },
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
