"""Progress bars: rich bars on a terminal, silence with ``quiet`` or when output is not a TTY."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class _Silent:
    """The slice of rich's Progress API that stages use, doing nothing."""

    def add_task(self, *_args: Any, **_kwargs: Any) -> int:
        return 0

    def advance(self, *_args: Any, **_kwargs: Any) -> None:
        pass

    def update(self, *_args: Any, **_kwargs: Any) -> None:
        pass


@contextmanager
def progress(quiet: bool = False) -> Iterator[Progress | _Silent]:
    if quiet or not sys.stderr.isatty():
        yield _Silent()
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    )
    with bar:
        yield bar


def status(message: str) -> None:
    """One line about a long wait (a batch being processed), on stderr, when on a terminal."""
    if sys.stderr.isatty():
        print(message, file=sys.stderr, flush=True)
