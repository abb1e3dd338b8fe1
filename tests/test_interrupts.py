"""Ctrl-C ends edgekd with exit 130 wherever it lands (issue 20), checked on the real ``main``.

Python tears down with SIGINT back at its default (a Ctrl-C there killed the process, -2, with no
word), exit handlers turn one into a traceback, and a thread left running (NNI's) holds the process
open after the command has returned. The stage-by-stage Ctrl-C runs are in tests/test_faults.py (slow).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROLOGUE = """
import atexit, sys, threading, time
import typer
from edgekd.cli import app, main
from edgekd.cli.app import handles_errors

@app.command("nap")
@handles_errors
def nap() -> None:
    print("in the command", flush=True)
    time.sleep(30)
"""


def _run_until(script: str, marker: str, argv: list[str]) -> tuple[int, str, float]:
    """Run ``script`` then ``main()`` with ``argv``; SIGINT its process group once ``marker`` is printed.
    Returns the exit code, stderr, and seconds from the signal to the exit."""
    code = PROLOGUE + textwrap.dedent(script) + f"\nsys.argv = ['edgekd', *{argv!r}]\nmain()\n"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    seen = ""
    while marker not in seen:
        line = proc.stdout.readline()
        assert line, f"ended before {marker!r}: {proc.communicate()}"
        seen += line
    os.killpg(proc.pid, signal.SIGINT)
    sent = time.monotonic()
    try:
        _, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    return proc.returncode, err, time.monotonic() - sent


def test_ctrl_c_while_python_tears_down_is_130_without_a_traceback():
    code, err, _ = _run_until(
        """
        atexit.register(lambda: (print("tearing down", flush=True), time.sleep(3)))
        """,
        "tearing down",
        ["targets"],
    )
    assert code == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


def test_ctrl_c_in_a_command_with_a_thread_left_running_exits_130_at_once():
    code, err, seconds = _run_until(
        """
        threading.Thread(target=time.sleep, args=(60,)).start()  # like NNI's, not a daemon
        """,
        "in the command",
        ["nap"],
    )
    assert code == 130 and seconds < 10, (code, seconds, err)
    assert err.strip().splitlines()[-1] == "edgekd: interrupted; rerun the same command with --resume to continue"


def test_exit_codes_and_output_pass_through(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ok = subprocess.run([sys.executable, "-m", "edgekd", "targets"], env=env, capture_output=True, text=True)
    assert ok.returncode == 0 and "jetson-orin-nano" in ok.stdout  # stdout flushed before os._exit
    bad = subprocess.run(
        [sys.executable, "-m", "edgekd", "distill", str(tmp_path / "none")], env=env, capture_output=True, text=True
    )
    assert bad.returncode == 2 and bad.stderr.startswith("edgekd: error:") and bad.stderr.count("\n") == 1
