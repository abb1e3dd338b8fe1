"""Detection KD on BCCD (blood cells, 3 classes): a teacher trained once, an edge student alone and with
detection KD methods, seeds, one budget; COCO mAP by pycocotools on the validation split.

    python benchmarks/detect_bccd.py [--data ../shared/data/bccd] [--teacher-arch edet_s] [--student edet_n]
        [--teacher-epochs 30] [--epochs 15] [--imgsz 320] [--seeds 0 1] [--rows alone pseudo_label ...]

Every row trains through edgekd's own functions (``edgekd.tasks.detect``: the ones the detect stages
call), so what it measures is what ``edgekd compress --task detect`` runs. The teacher is trained once
and cached beside the results (its recipe is recorded). Writes ``benchmarks/results/detect_bccd.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgekd.host import host_description  # noqa: E402
from edgekd.tasks.detect.checkpoint import load_detector, save_detector  # noqa: E402
from edgekd.tasks.detect.data import load_detection_data  # noqa: E402
from edgekd.tasks.detect.metrics import coco_map  # noqa: E402
from edgekd.tasks.detect.models import build_detector  # noqa: E402
from edgekd.tasks.detect.predict import predict_split  # noqa: E402
from edgekd.tasks.detect.train import train_detector  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
# Rows: name -> KD terms (weights as the papers' or MMRazor's configs give them; REFERENCES.md)
ROWS = {
    "alone": {},
    "dense_kd": {"dense_kd": 1.0},
    "bounded_reg": {"bounded_reg": 1.0},
    "fgfi": {"fgfi": 0.01},
    "cwd": {"cwd": 1.0},
    "pkd": {"pkd": 6.0},
    "pseudo_label": {"pseudo_label": 1.0},
    "pkd+pseudo_label": {"pkd": 6.0, "pseudo_label": 1.0},
}


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def evaluate(model, data, imgsz: int) -> dict:
    m = coco_map(predict_split(model, data.val, imgsz), data.val, data.names, data.category_ids)
    return {"map50_95": m["mAP"], "map50": m["mAP50"]}


def teacher(args, data):
    """The teacher, trained once per recipe and cached in benchmarks/.cache/ (git-ignored)."""
    recipe = {"arch": args.teacher_arch, "epochs": args.teacher_epochs, "lr": args.lr, "imgsz": args.imgsz}
    path = ROOT / "benchmarks" / ".cache" / ("detect_bccd_teacher_{arch}_{epochs}e_{imgsz}.pt".format(**recipe))
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        model, _ = load_detector(path, arch=None, num_classes=data.num_classes, imgsz=args.imgsz)
        return model, {**recipe, "cached": path.name}
    torch.manual_seed(0)
    model = build_detector(args.teacher_arch, data.num_classes, args.imgsz)
    t0 = time.perf_counter()
    train_detector(model, data, epochs=args.teacher_epochs, lr=args.lr, imgsz=args.imgsz, seed=0, log=_log)
    recipe["seconds"] = round(time.perf_counter() - t0, 1)
    names = {"names": data.names, "category_ids": data.category_ids}
    save_detector(path, model, arch=args.teacher_arch, imgsz=args.imgsz, metrics=recipe, **names)
    return model, recipe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "bccd"))
    ap.add_argument("--teacher-arch", default="edet_s")
    ap.add_argument("--student", default="edet_n")
    ap.add_argument("--teacher-epochs", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS, help="where the tables go (default benchmarks/results)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_detection_data(args.data, seed=0, log=_log)
    t_model, recipe = teacher(args, data)
    t_map = evaluate(t_model, data, args.imgsz)
    _log(f"teacher {args.teacher_arch}: mAP {t_map['map50_95']:.4f}")
    runs: dict[str, list[dict]] = {}
    for row in args.rows:
        for seed in args.seeds:
            torch.manual_seed(seed)
            student = build_detector(args.student, data.num_classes, args.imgsz)
            t0 = time.perf_counter()
            kd = {"teacher": t_model, "kd": ROWS[row]} if ROWS[row] else {}
            train_detector(student, data, epochs=args.epochs, lr=args.lr, imgsz=args.imgsz, seed=seed, **kd)
            m = {**evaluate(student, data, args.imgsz), "seed": seed, "seconds": round(time.perf_counter() - t0, 1)}
            runs.setdefault(row, []).append(m)
            _log(f"{row} seed {seed}: mAP {m['map50_95']:.4f} ({m['seconds']:.0f} s)")
    res = {
        "teacher": {**t_map, "recipe": recipe},
        "runs": runs,
        "host": host_description(),
        "command": "python benchmarks/detect_bccd.py " + " ".join(sys.argv[1:]),
        "args": vars(args),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "detect_bccd.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    (args.out / "detect_bccd.md").write_text(markdown(res))
    print(markdown(res))


def markdown(res: dict) -> str:
    a = res["args"]
    alone = [r["map50_95"] for r in res["runs"].get("alone", [])]
    lines = [
        "# Detection KD on BCCD",
        "",
        f"Teacher {a['teacher_arch']} ({res['teacher']['recipe']}): mAP@[.5:.95] {res['teacher']['map50_95']:.4f}, "
        f"mAP@.5 {res['teacher']['map50']:.4f}. Student {a['student']}, {a['epochs']} epochs at {a['imgsz']}px, "
        f"seeds {a['seeds']}; COCO mAP by pycocotools on the validation split.",
        "",
        "| row | mAP@[.5:.95] mean | spread (max - min) | mAP@.5 mean | vs alone | wall s / run |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row, runs in res["runs"].items():
        maps = [r["map50_95"] for r in runs]
        gain = f"{statistics.fmean(maps) - statistics.fmean(alone):+.4f}" if alone and row != "alone" else ""
        lines.append(
            f"| {row} | {statistics.fmean(maps):.4f} | {max(maps) - min(maps):.4f} | "
            f"{statistics.fmean(r['map50'] for r in runs):.4f} | {gain} | "
            f"{statistics.fmean(r['seconds'] for r in runs):.0f} |"
        )
    h = res["host"]
    lines += ["", f"Machine: {h['cpu']}, {h['logical_cores']} logical cores.", "", f"Command: `{res['command']}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
