"""Progress on a terminal for long commands (`cache warm`, `compare`, `testbed bench`, the
benchmarks).

A bar on standard error shows the step count, the elapsed time and the item being worked on; it
refreshes by itself while one long solve runs. It is drawn only when standard error is a
terminal and the command was not asked for JSON: in logs, pipes and CI nothing but the
command's own lines is written. Lines the command prints while the bar is shown appear above
it, on the stream they were printed to.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO


class Steps:
    """What a command reports while it works: each step as it begins."""

    def begin(self, item: str) -> None:
        """The step before (if any) is done; `item` is now being worked on."""


class _Bar(Steps):
    def __init__(self, bar: Any, task: Any) -> None:
        self._bar, self._task, self._begun = bar, task, False

    def begin(self, item: str) -> None:
        self._bar.update(self._task, advance=1 if self._begun else 0, item=item)
        self._begun = True


def shown_on(stream: TextIO, quiet: bool = False) -> bool:
    """Whether a bar would be drawn on `stream`: a terminal, and not asked to be quiet."""
    isatty = getattr(stream, "isatty", None)
    return not quiet and isatty is not None and bool(isatty())


@contextmanager
def progress(total: int, description: str, *, quiet: bool = False) -> Iterator[Steps]:
    """A bar of `total` steps on standard error, or nothing (see the module docstring)."""
    if not shown_on(sys.stderr, quiet):
        yield Steps()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[item]}"),
        console=Console(file=sys.stderr),
        transient=True,
        redirect_stdout=shown_on(sys.stdout),
        redirect_stderr=True,
    )
    with bar:
        yield _Bar(bar, bar.add_task(description, total=total, item=""))
