"""The latency model's commands: ``latency`` (a model's modelled latency on a target) and
``profile`` (measure a target's latency table)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from edgekd.cli.app import handles_errors, stdout
from edgekd.cli.groups import _parse_shape
from edgekd.cli.options import JsonOpt, QuietOpt, ThreadsOpt
from edgekd.console import Reporter
from edgekd.errors import EdgekdError


@handles_errors
def latency(
    model: Annotated[
        str, typer.Argument(metavar="MODEL", help="An .onnx file, or a zoo name / tv:NAME (then see --input-shape).")
    ],
    target: Annotated[str, typer.Option("--target", help="Target profile name or YAML path (see `edgekd targets`).")],
    precision: Annotated[
        str | None, typer.Option("--precision", help="fp32, fp16 or int8 (default: the target's precision).")
    ] = None,
    batch: Annotated[int, typer.Option("--batch", help="Batch size.")] = 1,
    input_shape: Annotated[
        str | None,
        typer.Option("--input-shape", help="C,H,W: needed for a zoo model (default 3,32,32) or a dynamic ONNX input."),
    ] = None,
    num_classes: Annotated[int, typer.Option("--num-classes", help="Classes of a zoo model.")] = 10,
    lut: Annotated[
        str | None,
        typer.Option(
            "--lut",
            help="Calibration table from `edgekd profile` (default: the target's table in ~/.cache/edgekd/lut "
            "or $EDGEKD_LUT_DIR when there is one); 'none' for the bare roofline.",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also print the per-layer table.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Estimate a model's latency on a target (modelled: calibration table or roofline, never measured)."""
    from edgekd.targets import load_target
    from edgekd.targets.latency import estimate_latency

    profile = load_target(target)
    shape = _parse_shape(input_shape)
    path = Path(model)
    if path.suffix.lower() == ".onnx" or path.exists():
        subject: Any = path
    else:
        from edgekd.models import create_model

        shape = shape or (3, 32, 32)
        subject = create_model(model, num_classes=num_classes, in_channels=shape[0])
    table: Any = "auto" if lut is None else None if lut.lower() == "none" else Path(lut)
    est = estimate_latency(
        subject, profile, input_shape=shape, precision=precision or profile.precision, batch=batch, lut=table
    )
    if as_json:
        print(json.dumps(est.to_dict(), indent=2))
        return
    if verbose:
        layers = Table(title=f"{model} on {profile.name}: per layer ({est.precision}, batch {est.batch})")
        for col in ("#", "layer", "kind", "fused", "MFLOPs", "KB moved", "ms", "source"):
            layers.add_column(col, justify="right" if col in ("#", "MFLOPs", "KB moved", "ms") else "left")
        for i, row in enumerate(est.per_layer):
            layers.add_row(
                str(i),
                row["op"],
                row["kind"],
                "+".join(row["fused"]),
                f"{row['flops'] / 1e6:.3f}",
                f"{row['bytes'] / 1e3:.1f}",
                f"{row['ms']:.4f}",
                row["source"] + (f" ({row['bound']})" if row.get("bound") else ""),
            )
        stdout.print(layers)
        for note in est.notes:
            stdout.print(f"note: {note}")
    table_note = f", table {est.table}" if est.table else ""
    stdout.print(
        f"{model}: {est.ms:.3f} ms on {profile.display_name} ({est.precision}, batch {est.batch}, "
        f"{est.flops / 1e6:.1f} MFLOPs) - modelled, source: {est.source}{table_note}"
    )


@handles_errors
def profile(
    target: Annotated[str, typer.Option("--target", help="The target this machine is (x86-cpu, arm-cpu, a Jetson).")],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Where to write the table (default ~/.cache/edgekd/lut/<target>.json)."),
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="A dozen layers in a few seconds instead of ~550.")] = False,
    precision: Annotated[
        list[str] | None,
        typer.Option(
            "--precision", metavar="fp32|fp16|int8", help="Precision(s) to measure (TensorRT: fp32, fp16, int8)."
        ),
    ] = None,
    threads: ThreadsOpt = None,
    clock: Annotated[
        str,
        typer.Option(
            "--clock",
            metavar="wall|cpu",
            help="wall: elapsed time (a quiet machine). cpu: ONNX Runtime's CPU time, which other jobs on a "
            "shared machine do not inflate (use with --threads 1).",
        ),
    ] = "wall",
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Measure layer latencies on this machine and write the table `edgekd latency` prefers to the roofline.

    Runs a grid of one-layer models through TensorRT when it is installed with a GPU, else ONNX
    Runtime on the CPU. Run it on the device itself: a table describes the machine it ran on.
    """
    from edgekd.targets import load_target
    from edgekd.targets.calibrate import profile_runtime, run_profile
    from edgekd.targets.lut import default_table_path

    if threads is not None and threads < 1:
        raise EdgekdError(f"--threads must be at least 1, got {threads}")
    prof = load_target(target)
    precisions = tuple(precision or ["fp32"])
    bad = [p for p in precisions if p not in ("fp32", "fp16", "int8")]
    if bad:
        raise EdgekdError(f"--precision must be fp32, fp16 or int8, got {', '.join(bad)}")
    runtime = profile_runtime(prof, precisions)
    if clock not in ("wall", "cpu") or (clock == "cpu" and runtime != "onnxruntime"):
        raise EdgekdError(f"--clock must be wall or cpu (cpu with ONNX Runtime only), got {clock}")
    reporter = Reporter(quiet=quiet or as_json)
    destination = out or default_table_path(prof.name)
    reporter.info(f"profile: timing {'the quick' if quick else 'the default'} layer grid for {prof.name} ({runtime})")

    def progress(done: int, total: int, label: str) -> None:
        if done == total or done % 20 == 0:
            reporter.info(f"  {done}/{total} {label}")

    table = run_profile(
        prof.name,
        grid="quick" if quick else "default",
        precisions=precisions,
        threads=threads,
        sessions=1 if quick else 2,
        min_runs=10 if quick else 20,
        budget_s=0.02 if quick else 0.15,
        progress=progress,
        clock=clock,
    )
    table.save(destination)
    summary = {
        "table": str(destination),
        "target": table.target,
        "runtime": table.runtime,
        "grid": table.grid,
        "entries": {p: len(t.entries) for p, t in table.precisions.items()},
        "run_overhead_ms": {p: t.run_overhead_ms for p, t in table.precisions.items()},
        "fit_median_rel_error": {
            p: {k: f.median_rel_error for k, f in t.fits.items()} for p, t in table.precisions.items()
        },
    }
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        stdout.print(
            f"Latency table for {table.target} ({table.runtime}, {sum(summary['entries'].values())} layers) "
            f"-> {destination}"
        )
