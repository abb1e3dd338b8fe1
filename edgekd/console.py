"""Human output: log lines and progress bars on stderr, so stdout stays for tables and ``--json``.

``Reporter(quiet=True)`` prints nothing but warnings; progress bars are only drawn on a terminal.
Messages are never hard-wrapped (a terminal wraps them itself; a log keeps each on one line), and
``Output``, the console for tables, is as wide as a table needs when it is not a terminal, so that a
CI log shows names whole.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console, ConsoleDimensions
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class Output(Console):
    """A console whose width, when it writes to a pipe or a file, is whatever a line needs."""

    UNBOUNDED = 10_000

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        return size if self.is_terminal else ConsoleDimensions(self.UNBOUNDED, size.height)


class Reporter:
    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)

    def info(self, message: str) -> None:
        if not self.quiet:
            self.err.print(message)

    def warn(self, message: str) -> None:
        self.err.print(f"[yellow]warning:[/yellow] {message}")

    @contextlib.contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[_Bar]:
        """A bar over ``total`` steps; ``bar.advance(n, **fields)`` moves it, ``bar.note(text)``
        changes the text after it. Without a terminal (CI logs) nothing is drawn."""
        if self.quiet or not self.err.is_terminal:
            yield _Bar(None, None)
            return
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[note]}"),
            console=self.err,
            transient=True,
        )
        with progress:
            task = progress.add_task(description, total=total, note="")
            yield _Bar(progress, task)


class _Bar:
    def __init__(self, progress: Progress | None, task):
        self._progress, self._task = progress, task

    def advance(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def note(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, note=text)

    def reset(self, description: str, total: int | None) -> None:
        if self._progress is not None:
            self._progress.reset(self._task, total=total, description=description, note="")
