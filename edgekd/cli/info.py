"""Commands that describe: ``targets``, ``models``, and ``inspect`` of a run directory."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from edgekd.cli.app import handles_errors, stdout
from edgekd.cli.options import JsonOpt, RunDirArg
from edgekd.config import build_config, read_yaml


@handles_errors
def targets(as_json: JsonOpt = False) -> None:
    """List the target device profiles (with their default runtime and precision)."""
    from edgekd.targets import list_targets

    profiles = list_targets()
    if as_json:
        print(json.dumps([p.model_dump(mode="json") for p in profiles], indent=2))
        return
    table = Table(title="edgekd targets")
    table.add_column("name", no_wrap=True)  # what users type: never cut or broken
    for col in ("also", "device", "kind", "runtime", "precision", "INT8 TOPS (dense)", "memory GB/s"):
        table.add_column(col)
    for p in profiles:
        table.add_row(
            p.name,
            ", ".join(p.aliases),
            p.display_name,
            p.kind,
            p.runtime,
            p.precision,
            "-" if p.int8_tops_dense is None else f"{p.int8_tops_dense:g}",
            "-" if p.memory_bandwidth_gbs is None else f"{p.memory_bandwidth_gbs:g}",
        )
    stdout.print(table)


@handles_errors
def models(
    task: Annotated[str, typer.Option("--task", help="classify (the default) or detect.")] = "classify",
    as_json: JsonOpt = False,
) -> None:
    """List a task's architectures: the classifier zoo by default, the detectors with --task detect.

    Any torchvision classifier also works as tv:NAME; for detection, edgekd's edge detectors (edet_*) are the
    students and torchvision's detectors (tv:NAME) the teachers."""
    from edgekd.models import count_parameters
    from edgekd.tasks import get_task

    if task == "detect":
        from edgekd.tasks.detect.models import build_detector

        build = lambda name: build_detector(name, 10, 320)  # noqa: E731
        title = "edgekd detectors: edet_* students, tv:NAME torchvision detectors"
    else:
        from edgekd.models import create_model

        build = lambda name: create_model(name, num_classes=10)  # noqa: E731
        title = "edgekd model zoo (plus tv:NAME for any torchvision classifier)"
    rows = [{"name": n, "parameters_10_classes": count_parameters(build(n))} for n in get_task(task).model_names()]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=title)
    table.add_column("name", no_wrap=True)
    table.add_column("parameters (10 classes, 3 channels)", justify="right")
    for r in rows:
        table.add_row(r["name"], f"{r['parameters_10_classes']:,}")
    stdout.print(table)


@handles_errors
def inspect(run_dir: RunDirArg, as_json: JsonOpt = False) -> None:
    """Show a run directory's stages: status, timing, key metrics, and whether each is still valid.

    For each stage: whether its outputs still match their recorded sha256, and whether it is stale
    (its inputs changed since it ran, e.g. after `edgekd distill` was rerun; `compress --resume`
    would rerun it).
    """
    from edgekd.pipeline import RunDir, Runner

    run = RunDir(run_dir)
    manifest = run.load_manifest()
    runner = Runner(run, build_config(None, None, base=read_yaml(run.config_path)))
    stale = runner.stale_stages()
    for name, rec in manifest.get("stages", {}).items():
        rec["outputs_verified"] = run.outputs_verify(name)
        rec["stale"] = name in stale
    if as_json:
        print(json.dumps(manifest, indent=2, default=str))
        return
    table = Table(title=f"{run_dir}  (target {manifest.get('target')}, edgekd {manifest.get('edgekd_version')})")
    table.add_column("stage", no_wrap=True)
    for col in ("status", "seconds", "outputs", "key metrics"):
        table.add_column(col)
    for name, rec in manifest.get("stages", {}).items():
        outputs = rec.get("outputs") or {}
        metrics = rec.get("metrics") or {}
        shown = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in list(metrics.items())[:4]
            if isinstance(v, int | float)
        )
        status = rec.get("status", "?")
        if status == "failed":
            status += f": {rec.get('error', '')}"
        elif status == "done" and rec["stale"]:
            status = "stale (inputs changed)"
        table.add_row(
            name,
            status,
            f"{rec.get('seconds', 0):.1f}",
            f"{len(outputs)} files, {'verified' if rec['outputs_verified'] else 'MODIFIED or missing'}"
            if outputs
            else "-",
            shown,
        )
    stdout.print(table)
