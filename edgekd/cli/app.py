"""The Typer application, its root options, and the error handling every command shares."""

from __future__ import annotations

import contextlib
import functools
import inspect
import re
import sys
from typing import Annotated

import typer
from typer.core import TyperCommand, TyperGroup

from edgekd import __version__
from edgekd.console import Output
from edgekd.errors import EdgekdError


def _unwrap(text: str | None) -> str | None:
    """Docstring paragraphs as single lines: the help page wraps them to the terminal, not mid-sentence
    where the source line ended."""
    if not text:
        return text
    paragraphs = re.split(r"\n\s*\n", inspect.cleandoc(text))
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


# Options a command checks itself (so that it can take them from elsewhere) but the help marks required:
# `compress --teacher` may come from --config or from the run that --resume continues.
REQUIRED_IN_HELP = {"compress": ("teacher",)}


class _HelpPage:
    """The help page of a good Typer app: paragraphs wrap to the width, flags show no ``<bool>``, and an
    option in ``REQUIRED_IN_HELP`` is marked required."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.help = _unwrap(self.help)
        for param in self.params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""  # a flag takes no value

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option

    def format_help(self, ctx, formatter) -> None:
        shown = [p for p in self.params if p.name in REQUIRED_IN_HELP.get(self.name or "", ())]
        with contextlib.ExitStack() as undo:
            for param in shown:
                undo.callback(setattr, param, "required", param.required)
                param.required = True
            super().format_help(ctx, formatter)


class Command(_HelpPage, TyperCommand):
    pass


class Group(_HelpPage, TyperGroup):
    pass


app = typer.Typer(
    name="edgekd",
    cls=Group,
    help=(
        "Shrink a trained PyTorch classifier or object detector onto an edge device: distil a small student from it, "
        "export it to ONNX, and measure accuracy and latency side by side with the teacher.\n\n"
        "Start with:  edgekd compress --teacher ckpt.pt --target jetson-orin-nano --data PATH"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


stdout = Output(highlight=False, soft_wrap=True)  # tables and summaries; human messages go to stderr


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
