"""Run the teacher and distill stages (and optionally export) of a digits run from a config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgekd.config import build_config
from edgekd.console import Reporter
from edgekd.pipeline import run_stages_in


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
    run_stages_in(out, cfg, list(stages), resume=False, reporter=Reporter(quiet=True))
    return json.loads((out / "distill" / "metrics.json").read_text())
