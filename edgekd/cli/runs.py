"""What every pipeline command does after its stages: the summary (table or ``--json``) and, for
single stages, the hand-over to ``edgekd.pipeline.run_stage`` (``stage_command``)."""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekd.cli.app import handles_errors, stdout
from edgekd.cli.groups import Group, _overrides, stage_options, takes
from edgekd.console import Reporter


def _emit_summary(run, as_json: bool, quiet: bool = False) -> None:
    """The bench table and where the run is (nothing with --quiet), or the JSON summary."""
    manifest = run.manifest
    if as_json:
        summary = {
            "run_dir": str(run.path),
            "report": str(run.path / "report.md"),
            "target": manifest.get("target"),
            "stages": {
                k: {"status": v.get("status"), "seconds": v.get("seconds"), "metrics": v.get("metrics")}
                for k, v in manifest.get("stages", {}).items()
            },
        }
        print(json.dumps(summary, indent=2, default=str))
        return
    if quiet:
        return
    results_md = run.path / "bench" / "results.md"
    if results_md.is_file():
        stdout.print(results_md.read_text())
    stdout.print(f"Run directory: {run.path}   report: {run.path / 'report.md'}")


def _finish(run, as_json: bool, quiet: bool) -> None:
    """The summary, then a failed bench gate exits 1 (issue 6)."""
    from edgekd.bench.gates import raise_if_failed

    _emit_summary(run, as_json, quiet)
    raise_if_failed(run.path)


def _stage_command(
    stage: str, run_dir: Path, overrides: dict[str, Any], resume: bool, quiet: bool, as_json: bool
) -> None:
    from edgekd.pipeline import run_stage

    reporter = Reporter(quiet=quiet or as_json)
    run_stage(
        stage,
        run_dir,
        overrides,
        resume=resume,
        reporter=reporter,
        after=lambda run: _emit_summary(run, as_json, quiet),
    )


def stage_command(stage: str, *groups: Group, after: Callable[..., None] | None = None):
    """A command that reruns ``stage`` of RUN_DIR: ``fn(**its options)`` returns the config overrides
    they stand for; the command adds those of ``groups`` and --set, runs the stage and prints the
    summary, then calls ``after(run_dir, quiet, **its options)``. Every such command takes RUN_DIR,
    --resume, --set, --quiet and --json."""

    def wrap(fn: Callable[..., dict[str, Any]]) -> Callable[..., None]:
        @functools.wraps(fn)
        def command(*, overrides, run_dir, resume, set_, quiet, as_json, **options) -> None:
            pairs = _overrides({**overrides, **fn(**options)}, set_)
            _stage_command(stage, run_dir, pairs, resume, quiet, as_json)
            if after is not None:
                after(run_dir, quiet or as_json, **options)

        command.__signature__ = inspect.signature(fn, eval_str=True)  # type: ignore[attr-defined]
        return handles_errors(takes(*groups, stage_options)(command))

    return wrap
