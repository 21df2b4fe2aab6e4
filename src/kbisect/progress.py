"""Progress for long work: a rich progress bar on a terminal, one plain line per step otherwise."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)


def console() -> Console:
    return Console(stderr=True)


@contextmanager
def byte_progress(description: str, total: int | None) -> Iterator[Progress | None]:
    """A byte-counting bar on a terminal; None (quiet) when stderr is not a terminal."""
    if not sys.stderr.isatty():
        yield None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console(), transient=True) as progress:
        progress.add_task(description, total=total)
        yield progress


def advance(progress: Progress | None, amount: int) -> None:
    if progress is not None:
        progress.advance(progress.task_ids[0], amount)


@contextmanager
def line_progress(description: str) -> Iterator[Callable[[str], None]]:
    """A spinner showing the last line of a long command on a terminal; quiet otherwise."""
    if not sys.stderr.isatty():
        yield lambda line: None
        return
    with console().status(description) as status:
        yield lambda line: status.update(f"{description}: {line.strip()[:80]}")
