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
from collections.abc import Callable
from pathlib import Path

from edgekd import __version__
from edgekd.config import RunConfig, build_config, read_yaml
from edgekd.console import Reporter
from edgekd.errors import CheckFailed, EdgekdError, StorageError
from edgekd.io import sha256_json, storage_errno, storage_error
from edgekd.report import write_report
from edgekd.rundir import RunDir, _now, library_versions
from edgekd.stage import Stage, StageContext, StageResult
from edgekd.stages import STAGES
from edgekd.stages.common import teacher_path
from edgekd.tasks import get_task, resolve_task

ORDER = tuple(stage.name for stage in STAGES)
_STAGES: dict[str, type[Stage]] = {stage.name: stage for stage in STAGES}

__all__ = [
    "ORDER",
    "CheckFailed",
    "RunDir",
    "Runner",
    "Stage",
    "StageContext",
    "StageResult",
    "compress",
    "default_run_dir",
    "library_versions",
    "run_pipeline",
    "run_stage",
    "run_stages_in",
]


class Runner:
    """Runs registered stages in pipeline order over one run directory."""

    def __init__(self, run: RunDir, config: RunConfig, reporter: Reporter | None = None):
        self.run, self.config = run, config
        self.reporter = reporter or Reporter()
        # the default stages, with the ones the run's task replaces (edgekd/tasks/)
        task = get_task(config.task) if config.task != "auto" else None
        self.stages: dict[str, type[Stage]] = {**_STAGES, **(dict(task.stage_overrides) if task else {})}

    def fingerprint(self, stage: Stage) -> str:
        cfg = self.config.model_dump(mode="json")
        sliced = {k: cfg[k] for k in stage.config_keys}
        for dotted in stage.config_ignores:
            top, _, key = dotted.partition(".")
            if isinstance(sliced.get(top), dict):
                sliced[top] = {k: v for k, v in sliced[top].items() if k != key}
        return sha256_json(
            {
                "stage": stage.name,
                "config": sliced,
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
            stage = self.stages[name]()
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
        for up in self.stages[name].needs:
            if up in self.stages:
                out |= {up} | self._ancestors(up)
        return out

    def check(self, names: list[str]) -> None:
        """Run every stage's own ``check`` of the config, before any stage runs or anything is written."""
        for name in [n for n in ORDER if n in set(names) | {a for n in names for a in self._ancestors(n)}]:
            self.stages[name]().check(self.config, self.run)

    def stale_stages(self) -> list[str]:
        """Finished stages whose inputs changed since they ran (their fingerprint no longer matches)."""
        stale = []
        for name, record in self.run.manifest.get("stages", {}).items():
            if record.get("status") == "done" and name in self.stages:
                try:
                    if record.get("fingerprint") != self.fingerprint(self.stages[name]()):
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
            try:
                result = stage.run(ctx)
            except OSError as exc:  # a disk error outside edgekd.io's writers: said as what it is
                if isinstance(exc, StorageError) or storage_errno(exc) is None:
                    raise
                raise storage_error(exc, exc.filename or staging) from exc
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


# ---- what the commands run: a whole compression, or one stage of an existing run ----------------
def run_pipeline(
    run: RunDir, config: RunConfig, stages: list[str], resume: bool, reporter: Reporter, prepare: Callable[[], None]
) -> None:
    """Check the stages' settings, then ``prepare`` the run directory (config, manifest), then run.
    Nothing is written when a check fails; the report is rebuilt whatever happens after that. Warns
    when later stages now hold results of the earlier inputs (a stage rerun alone)."""
    runner = Runner(run, config, reporter)
    runner.check(stages)
    prepare()
    stale: list[str] = []
    try:
        runner.run_stages(stages, resume=resume)
    finally:
        if run.manifest and run.path.is_dir():
            stale = runner.stale_stages()
            write_report(run, stale=stale)
    if stale:
        reporter.warn(
            f"out of date: {', '.join(stale)} ran on earlier inputs (a stage before it was rerun); "
            f"refresh with `edgekd compress --out {run.path} --resume`"
        )


def default_run_dir(cfg: RunConfig, resume: bool) -> Path:
    """``runs/<teacher>-<target>`` numbered (``-2``, ``-3`` ...); with ``resume``, the newest existing one."""
    from edgekd.targets import load_target

    teacher_path(cfg)
    load_target(cfg.target)
    base = f"{Path(cfg.teacher.checkpoint).stem}-{Path(cfg.target).stem}"
    root = Path("runs")
    candidates = [root / base] + [root / f"{base}-{i}" for i in range(2, 1000)]
    existing = [c for c in candidates if (c / "manifest.json").is_file()]
    if resume:
        if not existing:
            raise EdgekdError(f"--resume found no earlier run under {root / base}*; pass --out RUN_DIR")
        return existing[-1]
    return next(c for c in candidates if not c.exists())


def compress(cfg: RunConfig, out: Path, *, resume: bool, reporter: Reporter, after: Callable[[RunDir], None]) -> None:
    """Every stage of ``cfg`` (the search only without a given student) in the run directory ``out``,
    then ``after(run)`` (the CLI's summary and gate check) while the run is still locked. A user error
    before any stage finished leaves no half-made run directory behind."""
    from edgekd.stages.search import search_active
    from edgekd.targets import resolve_target

    teacher_path(cfg)
    cfg = resolve_task(cfg)
    profile, chosen = resolve_target(cfg.target)
    if chosen is not None:  # a family name: the run records the module it became, so a resume is the same run
        cfg = cfg.model_copy(update={"target": profile.name})
    run = RunDir(out)
    run.check_free()  # a run in progress is named as such (pid, since), before any other complaint
    if run.exists() and not resume:
        raise EdgekdError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    if out.is_dir() and not run.exists() and any(p.name != ".lock" for p in out.iterdir()):
        raise EdgekdError(f"{out} is a folder with other files in it, not an edgekd run; choose a new or empty --out")
    fresh = not out.exists() or [p.name for p in out.iterdir()] == [".lock"]  # nothing but a killed run's lock
    if run.lock("compress"):
        reporter.warn(run.stale_lock)
    try:

        def prepare() -> None:
            if run.exists():
                run.load_manifest()
                run.manifest["target"] = cfg.target
                run.manifest["versions"] = library_versions()
            else:
                run.init_manifest(cfg)
            run.manifest["target_profile"] = {
                "name": profile.name,
                "kind": profile.kind,
                "runtime": profile.runtime,
                "precision": profile.precision,
            }
            if chosen is not None:
                run.manifest["target_profile"]["chosen"] = chosen
            run.write_config(cfg)
            reporter.info(f"edgekd {__version__}: run directory {out} (target {profile.display_name})")
            if chosen is not None:
                from rich.markup import escape

                reporter.info(f"target: {escape(chosen)}")

        stages = [s for s in ORDER if s != "search" or search_active(cfg)]
        run_pipeline(run, cfg, stages, resume, reporter, prepare)
        after(run)
    except EdgekdError:
        if fresh and not any(r.get("status") == "done" for r in run.manifest.get("stages", {}).values()):
            run.unlock()
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        run.unlock()


def run_stages_in(out: Path, cfg: RunConfig, stages: list[str], *, resume: bool, reporter: Reporter) -> RunDir:
    """Some stages of ``cfg`` (and the upstream stages they need) in the run directory ``out``, made
    when it is new: a part of what ``compress`` runs (the benchmarks' and the tests' entry point)."""
    run = RunDir(out)
    run.lock()
    try:

        def prepare() -> None:
            if run.exists():
                run.load_manifest()
            else:
                run.init_manifest(cfg)
            run.write_config(cfg)

        run_pipeline(run, cfg, stages, resume, reporter, prepare)
    finally:
        run.unlock()
    return run


def run_stage(
    stage: str, run_dir: Path, overrides: dict, *, resume: bool, reporter: Reporter, after: Callable[[RunDir], None]
) -> None:
    """Rerun one stage (and any upstream stage it needs that is not done) of an existing run."""
    run = RunDir(run_dir)
    run.load_manifest()
    if not run.config_path.is_file():
        raise EdgekdError(f"{run_dir} has no config.yaml, so the run cannot be repeated; start a new run with compress")
    cfg = resolve_task(build_config(None, overrides, base=read_yaml(run.config_path)))
    if run.lock(stage):
        reporter.warn(run.stale_lock)
    try:
        run.load_manifest()
        run_pipeline(run, cfg, [stage], resume, reporter, lambda: run.write_config(cfg))
        after(run)
    finally:
        run.unlock()
