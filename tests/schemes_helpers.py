"""Run the teacher and distill stages (and optionally export) of a digits run from a config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgekd.config import build_config
from edgekd.console import Reporter
from edgekd.pipeline import RunDir, Runner


def run_stages(out: Path, teacher: Path, overrides: dict[str, Any], stages=("teacher", "distill")) -> dict[str, Any]:
    """Fresh run in ``out``; returns the distill stage's metrics.json."""
    base = {
        "teacher.checkpoint": str(teacher),
        "student.arch": "cnn_small",
        "distill.epochs": 2,
        "data.max_train_samples": 400,
        "device": "cpu",
    }
    cfg = build_config(None, {**base, **overrides})
    run = RunDir(out)
    run.lock()
    try:
        runner = Runner(run, cfg, Reporter(quiet=True))
        runner.check(list(stages))
        run.init_manifest(cfg)
        run.write_config(cfg)
        runner.run_stages(list(stages), resume=False)
    finally:
        run.unlock()
    return json.loads((out / "distill" / "metrics.json").read_text())
