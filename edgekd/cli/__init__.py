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
    app()


__all__ = ["COMMANDS", "app", "main"]
