"""The Typer application, its root options, and the error handling every command shares."""

from __future__ import annotations

import functools
import sys
from typing import Annotated

import typer
from rich.console import Console

from edgekd import __version__
from edgekd.errors import EdgekdError

app = typer.Typer(
    name="edgekd",
    help=(
        "Shrink a trained PyTorch classifier onto an edge device: distil a small student from it, "
        "export it to ONNX, and measure accuracy and latency side by side with the teacher.\n\n"
        "Start with:  edgekd compress --teacher ckpt.pt --target jetson-orin-nano --data PATH"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


stdout = Console(highlight=False, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        print(f"edgekd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    pass


def handles_errors(fn):
    """Turn ``EdgekdError`` into one line on stderr and its exit code, with no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EdgekdError as err:
            print(f"edgekd: error: {err}", file=sys.stderr)
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            print("edgekd: interrupted; rerun the same command with --resume to continue", file=sys.stderr)
            raise typer.Exit(130) from None

    return wrapper
