"""Stage protocol, runner, manifest, fingerprints, resume and locking.

A stage is a small unit: a name, the config slices it reads, the stages whose artifacts it
needs, and a ``run(ctx)`` that writes only inside ``RUN_DIR/<name>/`` and returns its metrics.
The runner records each stage in ``manifest.json``:

    status        running | done | failed
    fingerprint   sha256 of (its config slice, its external inputs, the sha256 of every upstream
                  artifact, the edgekd version)
    outputs       {relative path: {sha256, bytes}} of every file in its folder
    metrics, started, finished, seconds, error

``resume=True`` skips a stage that is done with the same fingerprint and whose outputs still
verify, and lets a stage that was cut off (status ``running``/``failed`` with the same fingerprint)
continue from its own checkpoint. An exclusive ``flock`` on ``RUN_DIR/.lock`` stops two processes
from writing one run directory; the OS drops it when the holder dies, so a killed run never leaves
a stale lock behind.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from edgekd import __version__
from edgekd.config import RunConfig, dump_config
from edgekd.console import Reporter
from edgekd.errors import EdgekdError
from edgekd.io import atomic_write_json, atomic_write_text, sha256_file, sha256_json

# Pipeline order. Stages from later issues (search, quantize, package) slot in by name.
ORDER = ("teacher", "search", "distill", "quantize", "export", "bench", "package")
_STAGES: dict[str, type[Stage]] = {}


class CheckFailed(EdgekdError):
    """A stage's own check failed (e.g. ONNX parity); exit code 1, like a failed gate."""

    exit_code = 1


@dataclass
class StageResult:
    metrics: dict[str, Any] = field(default_factory=dict)


class Stage:
    name: ClassVar[str]
    config_keys: ClassVar[tuple[str, ...]] = ()  # top-level RunConfig fields this stage reads
    needs: ClassVar[tuple[str, ...]] = ()  # upstream stages whose artifacts it reads

    def external_inputs(self, config: RunConfig, run: RunDir) -> dict[str, Any]:
        """Inputs from outside the run directory (a teacher file, a dataset) that it hashes."""
        return {}

    def check(self, config: RunConfig, run: RunDir) -> None:
        """Raise ``EdgekdError`` for settings that cannot work, before anything is run or written."""

    def run(self, ctx: StageContext) -> StageResult:
        raise NotImplementedError


def register_stage(cls: type[Stage]) -> type[Stage]:
    if cls.name not in ORDER:
        raise ValueError(f"stage {cls.name!r} has no place in the pipeline order {ORDER}")
    _STAGES[cls.name] = cls
    return cls


def registered_stages() -> list[str]:
    _import_stages()
    return [name for name in ORDER if name in _STAGES]


def _import_stages() -> None:
    import edgekd.stages  # noqa: F401  (registration)


def library_versions() -> dict[str, str]:
    versions = {"edgekd": __version__, "python": platform.python_version()}
    for mod in ("torch", "torchvision", "numpy", "onnx", "onnxruntime", "nni", "sklearn"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - a missing optional library is simply not listed
            pass
    return versions


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


class RunDir:
    """A run directory: its config, its manifest and its lock."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.manifest_path = self.path / "manifest.json"
        self.config_path = self.path / "config.yaml"
        self._lock_fd: int | None = None
        self.manifest: dict[str, Any] = {}
        self._cache: dict[str, Any] = {}  # per-process memo for stages (loaded data, teacher)

    # -- lifecycle -------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def memo(self, key: str, make: Callable[[], Any]) -> Any:
        """Compute once per process (the loaded dataset, the teacher), shared by the stages of one run."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def lock(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise EdgekdError(
                f"run directory {self.path} is in use by another edgekd process (pid {holder}); "
                "wait for it to finish or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def load_manifest(self) -> dict[str, Any]:
        import json

        if not self.exists():
            raise EdgekdError(
                f"{self.path} is not an edgekd run directory (no manifest.json); "
                "pass a folder made by `edgekd compress`"
            )
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except ValueError:
            manifest = None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("stages", {}), dict):
            raise EdgekdError(
                f"{self.manifest_path} is not an edgekd manifest (damaged or edited); "
                "start a new run with `edgekd compress --out NEW_DIR`"
            )
        self.manifest = manifest
        return self.manifest

    def init_manifest(self, config: RunConfig) -> None:
        self.manifest = {
            "edgekd_version": __version__,
            "created": _now(),
            "updated": _now(),
            "target": config.target,
            "versions": library_versions(),
            "stages": {},
        }
        self.save_manifest()

    def save_manifest(self) -> None:
        self.manifest["updated"] = _now()
        atomic_write_json(self.manifest_path, self.manifest)

    def write_config(self, config: RunConfig) -> None:
        atomic_write_text(self.config_path, dump_config(config))

    # -- stage records ---------------------------------------------------------------------
    def stage_record(self, name: str) -> dict[str, Any]:
        return self.manifest.get("stages", {}).get(name, {})

    def stage_dir(self, name: str) -> Path:
        return self.path / name

    def outputs_verify(self, name: str) -> bool:
        outputs = self.stage_record(name).get("outputs") or {}
        for rel, meta in outputs.items():
            p = self.path / rel
            if not isinstance(meta, dict) or not p.is_file():
                return False
            if p.stat().st_size != meta.get("bytes") or sha256_file(p) != meta.get("sha256"):
                return False
        return bool(outputs)

    def hash_outputs(self, name: str) -> dict[str, dict[str, Any]]:
        out = {}
        root = self.stage_dir(name)
        for p in sorted(root.rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                out[str(p.relative_to(self.path))] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        return out


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


class Runner:
    """Runs registered stages in pipeline order over one run directory."""

    def __init__(self, run: RunDir, config: RunConfig, reporter: Reporter | None = None):
        self.run, self.config = run, config
        self.reporter = reporter or Reporter()
        _import_stages()

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
