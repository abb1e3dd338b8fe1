"""The deployment commands on a run directory: ``export``, ``bench`` (with its CI gates) and ``package``."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from edgekd.cli.groups import _csv, gate_options
from edgekd.cli.options import NmsOpt, ThreadsOpt
from edgekd.cli.runs import stage_command
from edgekd.errors import EdgekdError


@stage_command("export")
def export(
    opset: Annotated[int | None, typer.Option("--opset", help="ONNX opset (default 17).")] = None,
    nms: NmsOpt = None,
) -> dict:
    """(Re)run the export stage: FP32 ONNX of the student and teacher, checked, with a parity test."""
    return {"export.opset": opset, "detect.nms": nms}


def _raise_if_gate_failed(run_dir: Path, quiet: bool, **_) -> None:
    from edgekd.bench.gates import raise_if_failed

    raise_if_failed(run_dir)


@stage_command("bench", gate_options, after=_raise_if_gate_failed)
def bench(
    threads: ThreadsOpt = None,
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
) -> dict:
    """(Re)run the bench stage: accuracy, latency and size of teacher and student, then the CI gates.

    Measures accuracy, latency p50/p90/p99, throughput, memory and size of teacher and student (FP32
    and INT8) in each runtime. Writes RUN_DIR/bench/results.json, results.md, junit.xml and
    accuracy_latency.png. A failed gate exits 1 and names the gate and by how much. Gate options
    replace the gates saved in the run's config.yaml (by an earlier bench); without any, the saved
    gates apply again.
    """
    return {
        "bench.threads": threads,
        "bench.runs": runs,
        "bench.runtimes": _csv(runtime, "--runtime", str),
        "bench.batch_sizes": _csv(batch, "--batch", int),
    }


def _copy_bundle(run_dir: Path, quiet: bool, out: Path | None, **_) -> None:
    """``package --out``: the bundle folder and its .tar.gz copied into ``out``."""
    from edgekd.pipeline import RunDir

    if out is None:
        return
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


@stage_command("package", after=_copy_bundle)
def package(
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
) -> dict:
    """(Re)build the deployment bundle for the target, and its .tar.gz.

    The bundle: model_int8.onnx, labels, preprocess.json, infer.py, build_engine.sh, a Dockerfile for
    the target, manifest.json (sha256 of every file) and MODEL_CARD.md. Written to
    RUN_DIR/package/NAME/ and RUN_DIR/package/NAME.tar.gz.
    """
    if out is not None and out.exists() and not out.is_dir():
        raise EdgekdError(f"--out {out} is a file; pass a folder to copy the bundle into")
    target_value = str(Path(target).resolve()) if target and Path(target).is_file() else target
    return {"package.target": target_value, "package.include_fp32": fp32, "package.jetpack": jetpack}
