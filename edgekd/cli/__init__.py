"""The ``edgekd`` command line (Typer). It parses, builds the config and hands over to the pipeline.

User errors (``EdgekdError``) print one line on stderr and exit 2 (a failed check exits 1); human
output goes to stderr, tables and ``--json`` summaries to stdout. The commands are listed here in
pipeline order, the order ``edgekd --help`` shows them in:

    app.py       the application and the error handling every command shares
    options.py   options shared by several commands, defined once
    runs.py      the summary every pipeline command prints, and single-stage reruns
    compress.py  compress            train.py    search, distill, quantize, train-teacher
    deploy.py    export, bench, package          info.py     targets, models, inspect
    latency.py   latency, profile
"""

import atexit
import os
import signal
import sys

from edgekd.cli.app import Command, app
from edgekd.cli.compress import compress
from edgekd.cli.deploy import bench, export, package
from edgekd.cli.info import inspect, models, targets
from edgekd.cli.latency import latency, profile
from edgekd.cli.train import distill, quantize, search, train_teacher

COMMANDS = (
    ("compress", compress),
    ("search", search),
    ("distill", distill),
    ("quantize", quantize),
    ("export", export),
    ("bench", bench),
    ("package", package),
    ("train-teacher", train_teacher),
    ("targets", targets),
    ("models", models),
    ("inspect", inspect),
    ("latency", latency),
    ("profile", profile),
)
for _name, _command in COMMANDS:
    app.command(_name, cls=Command)(_command)


def main() -> None:
    """Run the command, then leave with its exit code and without Python's teardown.

    Ctrl-C in a command ends it with a line saying how to resume and exit 130. Python's teardown
    (freeing torch and ONNX Runtime, half a second) runs with SIGINT back at its default, so a Ctrl-C
    there killed the process (-2, no message), and a thread left running (NNI's) could hold it open.
    So: the exit handlers run with Ctrl-C noted rather than raised, output is flushed, and the
    process ends with ``os._exit``; a Ctrl-C after the command still means exit 130.
    """
    interrupted = []
    try:
        app()
        code = 0
    except SystemExit as done:
        code = done.code
    except KeyboardInterrupt:  # between the command and here
        code = 130
    signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    if not isinstance(code, int):
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be said there
            pass
    os._exit(130 if interrupted and code == 0 else code)


__all__ = ["COMMANDS", "app", "main"]
