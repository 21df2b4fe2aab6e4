"""Host leases between real processes."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kbisect.deadline import Deadline
from kbisect.errors import InfraError, UserError
from kbisect.lab.lease import Lease

# A lease holder in its own process: takes the lease, says so, holds it until a line arrives on
# stdin (or forever), releases it and says so.
HOLDER = """
import sys
from pathlib import Path
from kbisect.deadline import Deadline
from kbisect.lab.lease import Lease
leases, host, purpose, wait = sys.argv[1:5]
lease = Lease.acquire(Path(leases), host, purpose, Deadline(float(wait)))
print("held", lease.info.since.isoformat(), flush=True)
sys.stdin.readline()
lease.release()
print("released", flush=True)
"""


class Holder:
    """A child python process that takes a lease; ended by its PID."""

    def __init__(self, leases: Path, host: str, purpose: str, wait: float = 30) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(leases), host, purpose, str(wait)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.pid = self.proc.pid

    def line(self, timeout: float) -> str | None:
        """The next line it prints, or None if none comes within timeout."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline().strip() if ready else None

    def let_go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def end(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for holder in started:
        holder.end()


def test_free_lease_and_holder_in_process(tmp_path: Path) -> None:
    assert Lease.holder(tmp_path, "xen1") is None
    with Lease.acquire(tmp_path, "xen1", "bisect gntdev", Deadline(5)) as lease:
        assert lease.held
        info = Lease.holder(tmp_path, "xen1")
        assert info is not None
        assert (info.pid, info.purpose, info.host) == (os.getpid(), "bisect gntdev", "xen1")
        assert info == lease.info
        assert "bisect gntdev" in info.describe() and str(os.getpid()) in info.describe()
        assert Lease.holder(tmp_path, "xen2") is None  # leases are per host
    assert not lease.held
    assert Lease.holder(tmp_path, "xen1") is None
    with pytest.raises(UserError):
        Lease.holder(tmp_path, "../etc")


def test_second_process_waits_for_the_first(tmp_path: Path, holders: list[Holder]) -> None:
    first = Holder(tmp_path, "xen1", "nightly")
    holders.append(first)
    assert (first.line(20) or "").startswith("held")

    second = Holder(tmp_path, "xen1", "desk bisect")
    holders.append(second)
    assert second.line(1.5) is None  # still waiting
    info = Lease.holder(tmp_path, "xen1")
    assert info is not None and (info.pid, info.purpose) == (first.pid, "nightly")

    first.let_go()
    assert first.line(10) == "released"
    assert (second.line(10) or "").startswith("held")
    info = Lease.holder(tmp_path, "xen1")
    assert info is not None and (info.pid, info.purpose) == (second.pid, "desk bisect")
    second.let_go()
    assert second.line(10) == "released"
    assert Lease.holder(tmp_path, "xen1") is None


def test_deadline_names_the_holder(tmp_path: Path, holders: list[Holder]) -> None:
    first = Holder(tmp_path, "xen1", "nightly run 42")
    holders.append(first)
    assert (first.line(20) or "").startswith("held")
    started = time.monotonic()
    with pytest.raises(InfraError) as caught:
        Lease.acquire(tmp_path, "xen1", "impatient", Deadline(0.5))
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert "host xen1 is leased by" in message
    assert f"pid {first.pid}" in message and "'nightly run 42'" in message
    assert caught.value.exit_code == 3


def test_lease_of_killed_process_is_reclaimed(tmp_path: Path, holders: list[Holder]) -> None:
    first = Holder(tmp_path, "xen1", "doomed")
    holders.append(first)
    assert (first.line(20) or "").startswith("held")
    os.kill(first.pid, signal.SIGKILL)
    first.proc.wait(timeout=10)
    assert (tmp_path / "xen1.json").exists()  # its info stays behind ...
    assert Lease.holder(tmp_path, "xen1") is None  # ... but it holds nothing
    with Lease.acquire(tmp_path, "xen1", "after the crash", Deadline(2)) as lease:
        info = Lease.holder(tmp_path, "xen1")
        assert info is not None and info.pid == os.getpid() and info == lease.info


def test_lease_of_killed_waiter_does_not_linger(tmp_path: Path, holders: list[Holder]) -> None:
    # A process killed while waiting never held the lease; the next waiter gets it normally.
    first = Holder(tmp_path, "xen1", "first")
    holders.append(first)
    assert (first.line(20) or "").startswith("held")
    waiter = Holder(tmp_path, "xen1", "killed while waiting")
    holders.append(waiter)
    assert waiter.line(1) is None
    os.kill(waiter.pid, signal.SIGKILL)
    waiter.proc.wait(timeout=10)
    info = Lease.holder(tmp_path, "xen1")
    assert info is not None and info.pid == first.pid
    first.let_go()
    assert first.line(10) == "released"
    with Lease.acquire(tmp_path, "xen1", "next", Deadline(5)):
        info = Lease.holder(tmp_path, "xen1")
        assert info is not None and info.purpose == "next"
