"""The runner: stages in pipeline order over one run directory, with fingerprints and resume.

``resume=True`` skips a stage that is done with the same fingerprint and whose outputs still
verify, and lets a stage that was cut off (status ``running``/``failed`` with the same fingerprint)
continue from its own checkpoint. Stages run in a staging folder that is moved into place only
when they succeed. The stages are the explicit list of ``edgekd/stages/__init__.py``.
"""

from __future__ import annotations

import os
import shutil
import time

from edgekd import __version__
from edgekd.config import RunConfig
from edgekd.console import Reporter
from edgekd.errors import CheckFailed, EdgekdError
from edgekd.io import sha256_json
from edgekd.rundir import RunDir, _now, library_versions
from edgekd.stage import Stage, StageContext, StageResult
from edgekd.stages import STAGES

ORDER = tuple(stage.name for stage in STAGES)
_STAGES: dict[str, type[Stage]] = {stage.name: stage for stage in STAGES}

__all__ = ["ORDER", "CheckFailed", "RunDir", "Runner", "Stage", "StageContext", "StageResult", "library_versions"]


def registered_stages() -> list[str]:
    return list(ORDER)


class Runner:
    """Runs registered stages in pipeline order over one run directory."""

    def __init__(self, run: RunDir, config: RunConfig, reporter: Reporter | None = None):
        self.run, self.config = run, config
        self.reporter = reporter or Reporter()

    def fingerprint(self, stage: Stage) -> str:
        cfg = self.config.model_dump(mode="json")
        return sha256_json(
            {
                "stage": stage.name,
                "config": {k: cfg[k] for k in stage.config_keys},
                "external": stage.external_inputs(self.config, self.run),
                "upstream": {
                    up: {k: v["sha256"] for k, v in (self.run.stage_record(up).get("outputs") or {}).items()}
                    for up in stage.needs
                },
                "edgekd": __version__,
            }
        )

    def run_stages(self, names: list[str], *, resume: bool) -> None:
        """Run ``names`` (plus any upstream stage they need that is not done) in pipeline order.

        A stage is skipped when it is done with the same fingerprint and its outputs verify, and
        either ``resume`` is set or it is only needed upstream of ``names``.
        """
        self.check(names)
        wanted = set(names)
        for name in list(wanted):
            wanted |= self._ancestors(name)
        for name in [n for n in ORDER if n in wanted]:
            stage = _STAGES[name]()
            fp = self.fingerprint(stage)
            record = self.run.stage_record(name)
            same = record.get("fingerprint") == fp
            may_skip = resume or name not in names
            if may_skip and same and record.get("status") == "done" and self.run.outputs_verify(name):
                self.reporter.info(f"[dim]{name}: up to date, skipped[/dim]")
                continue
            cut_off = resume and same and record.get("status") in ("running", "failed")
            self._run_one(stage, fp, cut_off)

    def _ancestors(self, name: str) -> set[str]:
        out: set[str] = set()
        for up in _STAGES[name].needs:
            if up in _STAGES:
                out |= {up} | self._ancestors(up)
        return out

    def check(self, names: list[str]) -> None:
        """Run every stage's own ``check`` of the config, before any stage runs or anything is written."""
        for name in [n for n in ORDER if n in set(names) | {a for n in names for a in self._ancestors(n)}]:
            _STAGES[name]().check(self.config, self.run)

    def stale_stages(self) -> list[str]:
        """Finished stages whose inputs changed since they ran (their fingerprint no longer matches)."""
        stale = []
        for name, record in self.run.manifest.get("stages", {}).items():
            if record.get("status") == "done" and name in _STAGES:
                try:
                    if record.get("fingerprint") != self.fingerprint(_STAGES[name]()):
                        stale.append(name)
                except EdgekdError:
                    pass
        return stale

    def _run_one(self, stage: Stage, fingerprint: str, cut_off: bool) -> None:
        """Run ``stage`` in a staging folder and move it into place only when it succeeds, so a
        failed rerun leaves the previous outputs where they were (and recorded, as ``previous``)."""
        name = stage.name
        final, staging = self.run.stage_dir(name), self.run.path / f".{name}.partial"
        if not cut_off and staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True, exist_ok=True)
        stages = self.run.manifest.setdefault("stages", {})
        previous = stages.get(name, {})
        stages[name] = {"status": "running", "fingerprint": fingerprint, "started": _now()}
        self.run.save_manifest()
        self.reporter.info(f"[bold]{name}[/bold]: {'resuming' if cut_off else 'running'}")
        t0 = time.perf_counter()
        ctx = StageContext(self.run, name, self.config, self.reporter, resume=cut_off, dir=staging)
        try:
            result = stage.run(ctx)
        except BaseException as exc:
            record = {
                "status": "failed",
                "fingerprint": fingerprint,
                "error": str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__,
                "started": stages[name]["started"],
                "finished": _now(),
                "seconds": round(time.perf_counter() - t0, 3),
            }
            if previous.get("status") == "done" or "previous" in previous:
                record["previous"] = previous.get("previous", previous)  # its outputs are still in place
            stages[name] = record
            self.run.save_manifest()
            raise
        if final.exists():
            old = self.run.path / f".{name}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(staging, final)
            shutil.rmtree(old)
        else:
            os.replace(staging, final)
        stages[name].update(
            status="done",
            finished=_now(),
            seconds=round(time.perf_counter() - t0, 3),
            outputs=self.run.hash_outputs(name),
            metrics=result.metrics,
        )
        self.run.save_manifest()
