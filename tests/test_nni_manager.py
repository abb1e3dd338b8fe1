"""NNI's manager does not outlive the run that started it (edgekd.nas.manager; issue 20).

Fast checks with stand-in processes; the real thing (kill -9 and Ctrl-C in an ``nni-local`` search,
then ``--resume``) is in tests/test_faults.py (slow).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgekd.nas.manager import RECORD, ManagerLauncher, stop_stale_manager

REPO = Path(__file__).resolve().parents[1]
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")


def _gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":  # dead, waiting for its (new) parent to reap it
            return True
        time.sleep(0.05)
    return False


@linux_only
def test_the_manager_dies_when_edgekd_is_killed_with_9(tmp_path):
    """A process that starts a "manager" the way NNI's launcher does is SIGKILLed: the manager follows."""
    script = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from edgekd.nas.manager import ManagerLauncher\n"
        f"proc = ManagerLauncher(Path({str(tmp_path)!r}))([sys.executable, '-c', 'import time; time.sleep(120)'],"
        " preexec_fn=os.setpgrp)\n"
        "print(proc.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    edgekd = subprocess.Popen(
        [sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True
    )
    manager = int(edgekd.stdout.readline())
    try:
        record = json.loads((tmp_path / RECORD).read_text())
        assert record["pid"] == manager and record["parent"] == edgekd.pid
        assert os.getpgid(manager) == manager  # NNI's own preexec (its process group) still ran
        edgekd.kill()
        edgekd.wait()
        assert _gone(manager), "the manager outlived edgekd"
    finally:
        for pid in (edgekd.pid, manager):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def test_a_stale_manager_and_its_trials_are_stopped_on_resume(tmp_path):
    # stand-ins whose command lines read like NNI's manager (node .../nni_node/main.js) and its trial
    fake = [sys.executable, "-c", "import sys, time; time.sleep(120)", "nni_node/main.js"]
    manager = subprocess.Popen(fake, process_group=0)  # its own group, like NNI's (os.setpgrp)
    trial = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"], process_group=manager.pid
    )  # a trial lives in the manager's process group
    try:
        cmdline = Path(f"/proc/{manager.pid}/cmdline")
        deadline = time.monotonic() + 10
        while b"nni_node/main.js" not in cmdline.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.02)  # Popen returns after fork, maybe before exec: the stand-in's command line comes then
        (tmp_path / RECORD).write_text(json.dumps({"pid": manager.pid}))
        note = stop_stale_manager(tmp_path, wait_s=5)
        assert note and f"pid {manager.pid}" in note
        assert manager.wait(timeout=5) is not None and trial.wait(timeout=5) is not None
        assert not (tmp_path / RECORD).exists()
    finally:
        for proc in (manager, trial):
            proc.kill()
            proc.wait()


def test_a_record_whose_pid_is_not_a_manager_kills_nothing(tmp_path):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        (tmp_path / RECORD).write_text(json.dumps({"pid": other.pid}))  # the number reused by another program
        assert stop_stale_manager(tmp_path) is None
        assert other.poll() is None and not (tmp_path / RECORD).exists()
        (tmp_path / RECORD).write_text("{not json")
        assert stop_stale_manager(tmp_path) is None
    finally:
        other.kill()
        other.wait()


def test_forget_removes_the_record(tmp_path):
    launch = ManagerLauncher(tmp_path / "nni")
    proc = launch([sys.executable, "-c", "pass"])
    proc.wait()
    assert json.loads((tmp_path / "nni" / RECORD).read_text())["pid"] == proc.pid
    launch.forget()
    assert not (tmp_path / "nni" / RECORD).exists()
