"""Progress for long work: rich progress on a terminal; plain lines otherwise (CI logs).

Off a terminal a long phase prints a line at least every HEARTBEAT_SECONDS while it runs
(elapsed time and what it last did), and a line when it ends with the time it took, so that a
7-minute build does not look like a hang. Everything goes to stderr.
"""

from __future__ import annotations

import sys
import threading
import time
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

Say = Callable[[str], None]
"""Where a line of progress text goes (`print`, a task's own `say`, nothing in quiet tests)."""

HEARTBEAT_SECONDS = 30.0
"""Off a terminal, the longest a running phase stays silent."""

QUIET_TRANSFER_SECONDS = 5.0
"""Off a terminal, a transfer quicker than this prints no line when it ends (there are many)."""


def console() -> Console:
    return Console(stderr=True)


def elapsed(seconds: float) -> str:
    """`42 s`, `7m02s`, `1h03m`."""
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.0f} s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def _line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _then(status: str) -> str:
    return f"; {status}" if status else ""


@contextmanager
def plain_phase(
    description: str, status: Callable[[], str] = lambda: "", report_after: float = 0.0
) -> Iterator[None]:
    """A heartbeat line every HEARTBEAT_SECONDS while the block runs (with `status()`), and
    one when it ends (unless it ended well, quicker than `report_after` and unannounced)."""
    started = time.monotonic()
    stop, beaten = threading.Event(), threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            beaten.set()
            _line(f"{description}: {elapsed(time.monotonic() - started)} so far{_then(status())}")

    thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
    thread.start()
    ended = "stopped after"
    try:
        yield
        ended = "done in"
    finally:
        stop.set()
        thread.join(timeout=HEARTBEAT_SECONDS)  # it only prints a line
        took = time.monotonic() - started
        if took >= report_after or beaten.is_set() or ended != "done in":
            _line(f"{description}: {ended} {elapsed(took)}{_then(status())}")


@contextmanager
def phase(description: str) -> Iterator[None]:
    """A long step that prints nothing of its own on a terminal (its caller says what happens)
    but keeps a CI log alive off one."""
    if sys.stderr.isatty():
        yield
        return
    with plain_phase(description):
        yield


class ByteMeter:
    """Bytes moved so far, and the rich bar they drive on a terminal."""

    def __init__(self, total: int | None, bar: Progress | None = None) -> None:
        self.total, self.bar, self.done = total, bar, 0

    def advance(self, amount: int) -> None:
        self.done += amount
        if self.bar is not None:
            self.bar.advance(self.bar.task_ids[0], amount)

    def status(self) -> str:
        done = f"{self.done / 2**20:.1f} MiB"
        return f"{done} of {self.total / 2**20:.1f} MiB" if self.total else done


@contextmanager
def byte_progress(description: str, total: int | None) -> Iterator[ByteMeter]:
    """A byte-counting bar on a terminal; plain lines (see the module's docstring) otherwise."""
    if not sys.stderr.isatty():
        meter = ByteMeter(total)
        with plain_phase(description, meter.status, report_after=QUIET_TRANSFER_SECONDS):
            yield meter
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console(), transient=True) as progress:
        progress.add_task(description, total=total)
        yield ByteMeter(total, progress)


def advance(meter: ByteMeter, amount: int) -> None:
    meter.advance(amount)


@contextmanager
def line_progress(description: str) -> Iterator[Say]:
    """A spinner showing the last line of a long command on a terminal; plain lines (see the
    module's docstring) with the last line of output otherwise."""
    if not sys.stderr.isatty():
        last = [""]

        def remember(line: str) -> None:
            if line.strip():
                last[0] = line.strip()[:80]

        with plain_phase(description, lambda: last[0]):
            yield remember
        return
    with console().status(description) as status:
        yield lambda line: status.update(f"{description}: {line.strip()[:80]}")
