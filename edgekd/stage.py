"""What a stage is: a name, the config slices it reads, the stages whose artifacts it needs, and a
``run(ctx)`` that writes only inside its own folder of the run directory and returns its metrics.

The stages themselves are listed, in pipeline order, in ``edgekd/stages/__init__.py``; the runner
(``edgekd/pipeline.py``) reads that list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from edgekd.config import RunConfig
from edgekd.console import Reporter
from edgekd.errors import EdgekdError
from edgekd.rundir import RunDir


@dataclass
class StageResult:
    metrics: dict[str, Any] = field(default_factory=dict)


class Stage:
    name: ClassVar[str]
    config_keys: ClassVar[tuple[str, ...]] = ()  # top-level RunConfig fields this stage reads
    needs: ClassVar[tuple[str, ...]] = ()  # upstream stages whose artifacts it reads
    # dotted keys inside config_keys that this stage does not read (left out of its fingerprint, so
    # changing them reruns only the stages that do), e.g. "detect.nms" for the stages before export
    config_ignores: ClassVar[tuple[str, ...]] = ()

    def external_inputs(self, config: RunConfig, run: RunDir) -> dict[str, Any]:
        """Inputs from outside the run directory (a teacher file, a dataset) that it hashes."""
        return {}

    def check(self, config: RunConfig, run: RunDir) -> None:
        """Raise ``EdgekdError`` for settings that cannot work, before anything is run or written."""

    def run(self, ctx: StageContext) -> StageResult:
        raise NotImplementedError


@dataclass
class StageContext:
    run: RunDir
    name: str
    config: RunConfig
    reporter: Reporter
    resume: bool  # True when an earlier attempt of this stage with the same inputs was cut off
    dir: Path  # where the stage writes: a staging folder, moved into place when the stage succeeds

    def upstream(self, name: str) -> Path:
        record = self.run.stage_record(name)
        if record.get("status") != "done":
            raise EdgekdError(f"stage {self.name} needs stage {name}, which has not finished; run it first")
        return self.run.stage_dir(name)

    def upstream_metrics(self, name: str) -> dict[str, Any]:
        return self.run.stage_record(name).get("metrics") or {}
