"""The deployment commands on a run directory: ``export``, ``bench`` (with its CI gates) and ``package``."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from edgekd.cli.app import handles_errors
from edgekd.cli.options import JsonOpt, QuietOpt, ResumeOpt, RunDirArg, SetOpt, _csv, _overrides, _percent
from edgekd.cli.runs import _stage_command
from edgekd.errors import EdgekdError


@handles_errors
def export(
    run_dir: RunDirArg,
    opset: Annotated[int | None, typer.Option("--opset", help="ONNX opset (default 17).")] = None,
    resume: ResumeOpt = False,
    set_: SetOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """(Re)run the export stage: FP32 ONNX of the student and teacher, checked, with a parity test."""
    _stage_command("export", run_dir, _overrides({"export.opset": opset}, set_), resume, quiet, as_json)


@handles_errors
def bench(
    run_dir: RunDirArg,
    threads: Annotated[
        int | None, typer.Option("--threads", help="ONNX Runtime intra-op threads (default: physical cores).")
    ] = None,
    runs: Annotated[int | None, typer.Option("--runs", help="Timed runs at batch 1 (>= 50).")] = None,
    # --- issue 6: runtimes, batches and CI gates ---
    runtime: Annotated[
        str | None,
        typer.Option(
            "--runtime",
            help="Comma-separated runtimes: onnxruntime (default), onnxruntime-cuda, onnxruntime-tensorrt, "
            "torch, torch-cuda (FP32 and FP16), tensorrt. One that cannot run here is skipped with its reason.",
        ),
    ] = None,
    batch: Annotated[
        str | None, typer.Option("--batch", help="Comma-separated batch sizes to time, e.g. 1,8,32 (default 1,32).")
    ] = None,
    max_latency_ms: Annotated[
        float | None, typer.Option("--max-latency-ms", help="Gate: student p50 latency at batch 1 at most this.")
    ] = None,
    min_accuracy: Annotated[
        float | None, typer.Option("--min-accuracy", help="Gate: student top-1 at least this, in percent (e.g. 95).")
    ] = None,
    max_accuracy_drop: Annotated[
        float | None,
        typer.Option("--max-accuracy-drop", help="Gate: student top-1 at most this many points below the teacher."),
    ] = None,
    baseline: Annotated[
        Path | None, typer.Option("--baseline", help="An earlier bench/results.json to compare latency with.")
    ] = None,
    max_regression: Annotated[
        str | None,
        typer.Option("--max-regression", help="Gate: p50 latency at most this much above --baseline, e.g. 10%."),
    ] = None,
    no_gates: Annotated[
        bool, typer.Option("--no-gates", help="Drop the gates saved in the run's config.yaml by an earlier bench.")
    ] = False,
    resume: ResumeOpt = False,
    set_: SetOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """(Re)run the bench stage: accuracy, latency p50/p90/p99, throughput, memory and size of teacher and
    student (FP32 and INT8) in each runtime, then the CI gates.

    Writes RUN_DIR/bench/results.json, results.md, junit.xml and accuracy_latency.png. A failed gate
    exits 1 and names the gate and by how much. Gate options replace the gates saved in the run's
    config.yaml (by an earlier bench); without any, the saved gates apply again.
    """
    gate_flags = (max_latency_ms, min_accuracy, max_accuracy_drop, baseline, max_regression)
    overrides = _overrides(
        {
            # any gate option (or --no-gates) starts from no gates, so earlier gates do not linger
            "bench.gates": {} if no_gates or any(v is not None for v in gate_flags) else None,
            "bench.threads": threads,
            "bench.runs": runs,
            "bench.runtimes": _csv(runtime, "--runtime", str),
            "bench.batch_sizes": _csv(batch, "--batch", int),
            "bench.gates.max_latency_ms": max_latency_ms,
            "bench.gates.min_accuracy_pct": min_accuracy,
            "bench.gates.max_accuracy_drop_points": max_accuracy_drop,
            "bench.gates.baseline": str(baseline.expanduser().resolve()) if baseline else None,
            "bench.gates.max_regression_pct": _percent(max_regression, "--max-regression"),
        },
        set_,
    )
    _stage_command("bench", run_dir, overrides, resume, quiet, as_json)
    from edgekd.bench.gates import raise_if_failed

    raise_if_failed(run_dir)


@handles_errors
def package(
    run_dir: RunDirArg,
    target: Annotated[
        str | None,
        typer.Option("--target", help="Target profile of the bundle (default: the run's target), or a profile YAML."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Also copy the bundle folder and its .tar.gz into this folder."),
    ] = None,
    fp32: Annotated[
        bool | None, typer.Option("--fp32/--no-fp32", help="Also ship model_fp32.onnx beside the INT8 model.")
    ] = None,
    jetpack: Annotated[
        str | None, typer.Option("--jetpack", help="Jetson targets: the JetPack to build for (default: the newest).")
    ] = None,
    resume: ResumeOpt = False,
    set_: SetOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """(Re)build the deployment bundle: model_int8.onnx, labels, preprocess.json, infer.py, build_engine.sh,
    a Dockerfile for the target, manifest.json (sha256 of every file) and MODEL_CARD.md, plus its .tar.gz.

    Written to RUN_DIR/package/NAME/ and RUN_DIR/package/NAME.tar.gz.
    """
    target_value = str(Path(target).resolve()) if target and Path(target).is_file() else target
    overrides = _overrides(
        {"package.target": target_value, "package.include_fp32": fp32, "package.jetpack": jetpack}, set_
    )
    if out is not None and out.exists() and not out.is_dir():
        raise EdgekdError(f"--out {out} is a file; pass a folder to copy the bundle into")
    _stage_command("package", run_dir, overrides, resume, quiet, as_json)
    if out is not None:
        _copy_bundle(run_dir, out, quiet or as_json)


def _copy_bundle(run_dir: Path, out: Path, quiet: bool) -> None:
    from edgekd.pipeline import RunDir

    metrics = RunDir(run_dir).load_manifest()["stages"]["package"]["metrics"]
    name = metrics["bundle"]
    if (out / name).exists():
        raise EdgekdError(f"{out / name} already exists; remove it or pass another --out")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(run_dir / "package" / name, out / name)
    if metrics.get("tarball"):
        shutil.copy2(run_dir / metrics["tarball"], out / Path(metrics["tarball"]).name)
    if not quiet:
        print(f"bundle copied to {out / name}", file=sys.stderr)
