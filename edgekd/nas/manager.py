"""NNI's manager dies with the run that started it (``search.engine nni-local``; issue 20).

NNI starts its manager (a Node.js web server) in a process group of its own, so that Ctrl-C reaches
only edgekd, which then stops it. A run killed with ``kill -9`` could not: the manager and its trial
processes lived on, holding the port, and ``--resume`` failed with "port not idle". Two guards:

- on Linux the manager is started with ``PR_SET_PDEATHSIG`` (SIGTERM: the kernel signals it when
  edgekd dies, however it dies, and it stops its trials), and each trial process asks for SIGKILL
  when the manager dies;
- the manager's pid is written to ``manager.json`` in the search's NNI folder while it runs, and the
  next run stops a manager it finds still alive there (its process group: the manager and its trials).

Nothing here imports NNI (edgekd.nas.nni_space is its only importer): the launcher is a drop-in for
the ``subprocess.Popen`` that NNI's launcher calls.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
RECORD = "manager.json"


def _prctl():
    """libc's ``prctl`` (Linux), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def die_with_parent(sig: int = signal.SIGKILL, prctl=None) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent (thread) exits; Linux only.
    Returns False where that cannot be asked (another OS, no libc). ``prctl`` looked up beforehand
    keeps a child between fork and exec from loading anything."""
    prctl = prctl or _prctl()
    return prctl is not None and prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0


class ManagerLauncher:
    """Called like ``subprocess.Popen`` by NNI's launcher: the same process, which also dies with
    this one (Linux) and is recorded in ``workdir/manager.json`` until :meth:`forget`."""

    def __init__(self, workdir: Path):
        self.workdir = workdir

    def __call__(self, cmd, *args, preexec_fn=None, **kwargs) -> subprocess.Popen:
        parent, prctl = os.getpid(), _prctl()

        def preexec() -> None:
            if preexec_fn is not None:
                preexec_fn()  # NNI's own: its process group (os.setpgrp)
            die_with_parent(signal.SIGTERM, prctl)  # the manager stops its trials on SIGTERM
            if os.getppid() != parent:  # the parent died before the request took effect
                os._exit(1)

        proc = subprocess.Popen(cmd, *args, preexec_fn=preexec, **kwargs)  # noqa: PLW1509 - the point of it
        self.workdir.mkdir(parents=True, exist_ok=True)
        record = {"pid": proc.pid, "parent": parent, "started": time.time(), "command": " ".join(map(str, cmd))}
        (self.workdir / RECORD).write_text(json.dumps(record))
        return proc

    def forget(self) -> None:
        (self.workdir / RECORD).unlink(missing_ok=True)


def _alive_manager(pid: int) -> bool:
    """True when ``pid`` runs and is NNI's manager (not a process that reused the number)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        try:
            os.kill(pid, 0)  # no /proc: trust the record while the pid exists
        except OSError:
            return False
        return not sys.platform.startswith("linux")
    return b"nni_node" in cmdline and b"main.js" in cmdline


def stop_stale_manager(workdir: Path, wait_s: float = 10.0) -> str | None:
    """Stop the manager (and its trials) that a killed run left running; returns what was done."""
    path = workdir / RECORD
    try:
        record = json.loads(path.read_text())
        pid = int(record["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    note = None
    if _alive_manager(pid):
        for sig, grace in ((signal.SIGTERM, wait_s), (signal.SIGKILL, 2.0)):
            try:
                os.killpg(pid, sig)  # its process group: the manager and the trials it started
            except OSError:
                break
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and _alive_manager(pid):
                time.sleep(0.1)
            if not _alive_manager(pid):
                break
        note = f"stopped NNI's manager (pid {pid}) and its trials, left running by a run that was killed"
    path.unlink(missing_ok=True)
    return note
