"""Issue 6 acceptance on digits, run the way a CI job runs edgekd: through the command line.

1. `edgekd train-teacher` + `edgekd compress` (target jetson-orin-nano; the run ends with the
   package stage) + `edgekd package --target x86-cpu --out DIR`;
2. each bundle's .tar.gz is unpacked with the safe extractor, its manifest verified, and its
   `infer.py` run in a subprocess on the validation split (an .npz of raw uint8 images): its top-1
   must equal the manifest's within 0.1 point;
3. `edgekd bench` with a deliberately impossible gate must exit 1 with a failed JUnit case, and with
   reachable gates exit 0.

Writes benchmarks/results/ci_acceptance.md and .json. Usage:
    PYTHONPATH=. python benchmarks/ci_acceptance.py [--epochs 30] [--work benchmarks/work/ci]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def edgekd(*args, check=True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2"}
    proc = subprocess.run(
        [sys.executable, "-m", "edgekd", *map(str, args)], capture_output=True, text=True, env=env, cwd=REPO
    )
    if check and proc.returncode != 0:
        raise SystemExit(f"edgekd {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return proc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--work", type=Path, default=REPO / "benchmarks" / "work" / "ci")
    ap.add_argument("--reuse", action="store_true", help="keep the run and bundles of an earlier call (steps 2-3 only)")
    args = ap.parse_args()
    from junitparser import Failure, JUnitXml

    from edgekd.data import load_data
    from edgekd.host import cpu_model, physical_cores
    from edgekd.package.bundle import verify_bundle
    from edgekd.package.tarball import safe_extract

    teacher, run, out = args.work / "teacher.pt", args.work / "run", args.work / "bundles"
    if not (args.reuse and (out / "cpu").is_dir()):
        shutil.rmtree(args.work, ignore_errors=True)
        args.work.mkdir(parents=True)
        epochs = ("--epochs", args.epochs)
        edgekd("train-teacher", "--arch", "cnn_medium", "--data", "digits", *epochs, "--out", teacher, "-q")
        edgekd(
            "compress", "--teacher", teacher, "--target", "jetson-orin-nano", "--data", "digits",
            "--student", "cnn_small", "--epochs", args.epochs, "--out", run, "-q",
        )  # fmt: skip
        shutil.copytree(run / "package", out / "jetson")
        edgekd("package", run, "--target", "x86-cpu", "--out", out / "cpu", "-q")
    shutil.rmtree(args.work / "unpacked", ignore_errors=True)
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    pipeline_s = sum(r.get("seconds") or 0 for r in stages.values())  # compress + the last package

    data = load_data("digits", val_fraction=0.2, seed=0, max_train_samples=None, image_size=None)
    npz = args.work / "val.npz"
    np.savez(npz, x=data.val.images.numpy(), y=data.val.labels.numpy())
    bundles = []
    for kind in ("jetson", "cpu"):
        tarball = next((out / kind).glob("*.tar.gz"))
        dest = args.work / "unpacked" / kind
        safe_extract(tarball, dest)
        folder = next(p for p in dest.iterdir() if p.is_dir())
        manifest = json.loads((folder / "manifest.json").read_text())
        proc = subprocess.run(
            [sys.executable, str(folder / "infer.py"), "--npz", str(npz), "--json"], capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
        infer = json.loads(proc.stdout)
        diff = abs(100 * (infer["top1"] - manifest["metrics"]["top1"]))
        bundles.append(
            {
                "bundle": tarball.name,
                "model": f"{manifest['model']['file']} ({manifest['model']['format']})",
                "base_image": manifest["docker"]["base"],
                "manifest_top1": 100 * manifest["metrics"]["top1"],
                "infer_top1": 100 * infer["top1"],
                "samples": infer["samples"],
                "difference_points": diff,
                "reproduced": diff <= 0.1,
                "verify_problems": verify_bundle(folder),
                "tarball_bytes": tarball.stat().st_size,
            }
        )

    red = edgekd("bench", run, "--max-latency-ms", "0.000001", "-q", check=False)
    xml = JUnitXml.fromfile(str(run / "bench" / "junit.xml"))
    failed = [c.name for s in xml for c in s if any(isinstance(r, Failure) for r in c.result)]
    green = edgekd("bench", run, "--max-accuracy-drop", "5", "--min-accuracy", "90", "-q", check=False)
    results = json.loads((run / "bench" / "results.json").read_text())
    summary = {
        "machine": f"{cpu_model()}, {physical_cores()} cores, {platform.platform()}",
        "epochs": args.epochs,
        "pipeline_seconds": pipeline_s,
        "bundles": bundles,
        "impossible_gate": {"exit_code": red.returncode, "stderr_last_line": red.stderr.strip().splitlines()[-1],
                            "junit_failed_cases": failed},
        "reachable_gates": {"exit_code": green.returncode, "gates": results["gates"]},
        "bench_table": (run / "bench" / "results.md").read_text(),
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ci_acceptance.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        "# Issue 6 acceptance on digits (CLI, as a CI job runs it)",
        "",
        f"Machine: {summary['machine']}. Teacher cnn_medium and student cnn_small, {args.epochs} epochs each; "
        f"the compress stages took {pipeline_s:.0f} s in all (wall clock).",
        "",
        "| bundle | model | base image | top-1 in manifest (%) | top-1 by infer.py (%) | images | within 0.1 pt |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for b in bundles:
        lines.append(
            f"| {b['bundle']} | {b['model']} | `{b['base_image']}` | {b['manifest_top1']:.2f} | "
            f"{b['infer_top1']:.2f} | {b['samples']} | {'yes' if b['reproduced'] else 'NO'} |"
        )
    lines += [
        "",
        f"Impossible gate (`--max-latency-ms 0.000001`): exit code {red.returncode}; JUnit failed cases: "
        f"{', '.join(failed)}; stderr: `{summary['impossible_gate']['stderr_last_line']}`",
        "",
        f"Reachable gates (`--max-accuracy-drop 5 --min-accuracy 90`): exit code {green.returncode}.",
        "",
        "Bench table of the last run:",
        "",
        summary["bench_table"].rstrip(),
        "",
    ]
    (RESULTS / "ci_acceptance.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
