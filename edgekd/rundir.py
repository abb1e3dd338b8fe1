"""A run directory: its config, its manifest, its lock (DESIGN.md, "Run directory").

The manifest records each stage:

    status        running | done | failed
    fingerprint   sha256 of (its config slice, its external inputs, the sha256 of every upstream
                  artifact, the edgekd version)
    outputs       {relative path: {sha256, bytes}} of every file in its folder
    metrics, started, finished, seconds, error

An exclusive ``flock`` on ``RUN_DIR/.lock`` stops two processes from writing one run directory; the
file names the holder (pid, since when, command) so the second is told who holds it. The OS drops the
``flock`` when the holder dies; the next run finds the dead holder's name in the file, takes the lock
and says that it recovered a stale lock.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekd import __version__
from edgekd.config import RunConfig, dump_config
from edgekd.errors import EdgekdError
from edgekd.io import atomic_write_json, atomic_write_text, sha256_file


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
        self.stale_lock: str | None = None  # set by lock() when it recovered a killed run's lock
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

    def _holder(self, text: str) -> str:
        """``pid N since T`` from the lock file's text (``pid=N since=T command=C``), or what it holds."""
        fields = dict(part.split("=", 1) for part in text.split() if "=" in part)
        if "pid" not in fields:
            return f"pid {text.strip() or '?'}"
        command = f" ({fields['command'].replace('_', ' ')})" if fields.get("command") else ""
        return f"pid {fields['pid']} since {fields.get('since', '?')}{command}"

    def check_free(self) -> None:
        """Raise ``EdgekdError`` naming the holder when another process holds this run directory's lock."""
        lock_path = self.path / ".lock"
        if self._lock_fd is not None or not lock_path.is_file():
            return
        try:
            fd = os.open(lock_path, os.O_RDONLY)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode(errors="replace")
            raise EdgekdError(
                f"run directory {self.path} is in use by another edgekd process: {self._holder(holder)}; "
                "wait for it to finish or choose another --out"
            ) from None
        finally:
            os.close(fd)  # closing drops a shared lock taken just to look

    def lock(self, command: str = "edgekd") -> str | None:
        """Take the run directory's lock; returns a note when it recovered the stale lock of a killed run.

        The lock file holds ``pid=N since=T command=C`` while held and is emptied on a clean unlock, so a
        non-empty file found free is the lock of a process that died (the OS dropped its ``flock``)."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode(errors="replace")
            os.close(fd)
            raise EdgekdError(
                f"run directory {self.path} is in use by another edgekd process: {self._holder(holder)}; "
                "wait for it to finish or choose another --out"
            ) from None
        previous = os.pread(fd, 256, 0).decode(errors="replace").strip()
        # half-written files of a killed writer (edgekd.io's ".NAME.XXXX.tmp"): nobody else writes here now
        temps = [p for p in self.path.rglob(".*.tmp") if p.is_file()]
        for p in temps:
            p.unlink(missing_ok=True)
        self.stale_lock = None
        if previous:
            removed = f"; removed {len(temps)} half-written temp file(s)" if temps else ""
            self.stale_lock = (
                f"recovered the stale lock of {self._holder(previous)}, which stopped without releasing it "
                f"(killed?){removed}; {self.path} is now locked by this process (pid {os.getpid()})"
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid={os.getpid()} since={_now()} command={command.replace(' ', '_')}\n".encode(), 0)
        self._lock_fd = fd
        return self.stale_lock

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.ftruncate(self._lock_fd, 0)  # a clean release: an empty lock file is not stale
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
