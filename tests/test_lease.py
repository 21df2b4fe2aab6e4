"""Host leases between real processes, on both books: flocks on this machine, and rows in a
shared PostgreSQL store (a real server, tests/pgserver.py)."""

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
from kbisect.lab.lease import FileLeases
from kbisect.lab.store_lease import LeaseBook, StoreLeases, lease_book
from pgserver import PostgresServer

TIMEOUT = 3.0  # seconds a store lease outlives its holder's last heartbeat, in these tests

# A lease holder in its own process: takes the lease, says so, holds it until a line arrives on
# stdin (or forever), releases it and says so.
HOLDER = """
import sys
from pathlib import Path
from kbisect.deadline import Deadline
from kbisect.lab.store_lease import lease_book
leases, host, purpose, wait, timeout = sys.argv[1:6]
book = lease_book(Path(leases), None, float(timeout))  # the store: $KBISECT_STORE
lease = book.acquire(host, purpose, Deadline(float(wait)))
print("held", lease.info.since.isoformat(), flush=True)
sys.stdin.readline()
lease.release()
print("released", flush=True)
"""


class Holder:
    """A child python process that takes a lease; ended by its PID."""

    def __init__(self, leases: Path, host: str, purpose: str, wait: float = 30) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(leases), host, purpose, str(wait), str(TIMEOUT)],
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
def book(tmp_path: Path, store_backend: str | None) -> LeaseBook:
    """Each book of leases: this machine's flocks in tmp_path, a shared store's rows."""
    return lease_book(tmp_path, store_backend, TIMEOUT)


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for holder in started:
        holder.end()


def test_free_lease_and_holder_in_process(book: LeaseBook) -> None:
    assert book.holder("xen1") is None
    with book.acquire("xen1", "bisect gntdev", Deadline(5)) as lease:
        assert lease.held
        info = book.holder("xen1")
        assert info is not None
        assert (info.pid, info.purpose, info.host) == (os.getpid(), "bisect gntdev", "xen1")
        assert info == lease.info
        assert "bisect gntdev" in info.describe() and str(os.getpid()) in info.describe()
        assert book.holder("xen2") is None  # leases are per host
    assert not lease.held
    assert book.holder("xen1") is None
    with pytest.raises(UserError):
        book.holder("../etc")


def test_second_process_waits_for_the_first(
    tmp_path: Path, book: LeaseBook, holders: list[Holder]
) -> None:
    first = Holder(tmp_path, "xen1", "nightly")
    holders.append(first)
    assert (first.line(20) or "").startswith("held")

    second = Holder(tmp_path, "xen1", "desk bisect")
    holders.append(second)
    assert second.line(1.5) is None  # still waiting
    info = book.holder("xen1")
    assert info is not None and (info.pid, info.purpose) == (first.pid, "nightly")

    first.let_go()
    assert first.line(10) == "released"
    assert (second.line(10) or "").startswith("held")
    info = book.holder("xen1")
    assert info is not None and (info.pid, info.purpose) == (second.pid, "desk bisect")
    second.let_go()
    assert second.line(10) == "released"
    assert book.holder("xen1") is None


def test_deadline_names_the_holder(tmp_path: Path, book: LeaseBook, holders: list[Holder]) -> None:
    first = Holder(tmp_path, "xen1", "nightly run 42")
    holders.append(first)
    assert (first.line(20) or "").startswith("held")
    started = time.monotonic()
    with pytest.raises(InfraError) as caught:
        book.acquire("xen1", "impatient", Deadline(0.5))
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert "host xen1 is leased by" in message
    assert f"pid {first.pid}" in message and "'nightly run 42'" in message
    assert caught.value.exit_code == 3


def test_lease_of_killed_process_is_reclaimed(
    tmp_path: Path, book: LeaseBook, holders: list[Holder]
) -> None:
    first = Holder(tmp_path, "xen1", "doomed")
    holders.append(first)
    assert (first.line(20) or "").startswith("held")
    os.kill(first.pid, signal.SIGKILL)
    first.proc.wait(timeout=10)
    if isinstance(book, StoreLeases):
        # its row stays until its heartbeat is TIMEOUT late; then the lease is free
        info = book.holder("xen1")
        assert info is not None and info.pid == first.pid and info.expires is not None
        wait = Deadline(TIMEOUT * 4)
    else:
        assert (tmp_path / "xen1.json").exists()  # its info stays behind ...
        assert book.holder("xen1") is None  # ... but it holds nothing
        wait = Deadline(2)
    with book.acquire("xen1", "after the crash", wait) as lease:
        info = book.holder("xen1")
        assert info is not None and info.pid == os.getpid() and info == lease.info


def test_a_waiting_controller_takes_over_from_a_killed_one(
    tmp_path: Path, book: LeaseBook, holders: list[Holder]
) -> None:
    """Two controller processes contend for one host; the holder is SIGKILLed: the other gets
    the host (at once with flocks, after the timeout in a shared store), and never both."""
    first = Holder(tmp_path, "xen1", "controller A")
    holders.append(first)
    assert (first.line(20) or "").startswith("held")
    second = Holder(tmp_path, "xen1", "controller B", wait=TIMEOUT * 6)
    holders.append(second)
    assert second.line(1.0) is None  # waits while A lives (and heartbeats past TIMEOUT / 3)
    info = book.holder("xen1")
    assert info is not None and info.pid == first.pid
    os.kill(first.pid, signal.SIGKILL)
    first.proc.wait(timeout=10)
    assert (second.line(TIMEOUT * 6) or "").startswith("held")
    info = book.holder("xen1")
    assert info is not None and (info.pid, info.purpose) == (second.pid, "controller B")
    second.let_go()
    assert second.line(10) == "released"
    assert book.holder("xen1") is None


def test_a_store_lease_outlives_its_timeout_while_its_holder_heartbeats(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    book = StoreLeases(postgres_server.fresh_schema(), TIMEOUT)
    with book.acquire("xen1", "long cell", Deadline(5)) as lease:
        first = book.holder("xen1")
        assert first is not None and first.expires is not None
        time.sleep(TIMEOUT * 1.5)
        later = book.holder("xen1")
        assert later is not None and later.expires is not None and later.expires > first.expires
        assert lease.held
        with pytest.raises(InfraError, match="leased by"):
            book.acquire("xen1", "another", Deadline(0.3))
    assert book.holder("xen1") is None and book.holders() == []


def test_a_host_held_by_hand_and_taken_back(postgres_server: PostgresServer) -> None:
    book = StoreLeases(postgres_server.fresh_schema(), TIMEOUT)
    said: list[str] = []
    book.hold("xen2", "maintenance by alice", 3600, said.append)
    assert said and "maintenance by alice" in said[0]
    (info,) = book.holders()  # the process that took it may end: the lease stays
    assert (info.host, info.purpose) == ("xen2", "maintenance by alice")
    assert info.expires is not None and (info.expires - info.since).total_seconds() > 3500
    with pytest.raises(InfraError, match="leased by"):
        book.hold("xen2", "someone else", 10, said.append)
    with pytest.raises(InfraError, match="maintenance by alice"):
        book.acquire("xen2", "nightly", Deadline(0.3))
    taken = book.take_back("xen2")
    assert taken is not None and taken.purpose == "maintenance by alice"
    assert book.take_back("xen2") is None
    with book.acquire("xen2", "nightly", Deadline(2)) as lease:
        assert lease.held
        assert book.take_back("xen2") is not None  # a live holder learns at its next beat
        deadline = Deadline(TIMEOUT * 3)
        while lease.held and not deadline.expired:
            time.sleep(0.1)
        assert not lease.held


def test_local_leases_cannot_be_taken_back(tmp_path: Path, holders: list[Holder]) -> None:
    book = FileLeases(tmp_path)
    assert book.take_back("xen1") is None
    first = Holder(tmp_path, "xen1", "nightly")
    holders.append(first)
    assert (first.line(20) or "").startswith("held")
    with pytest.raises(UserError, match=f"pid {first.pid}"):
        book.take_back("xen1")
    assert [info.pid for info in book.holders()] == [first.pid]


def test_lease_of_killed_waiter_does_not_linger(
    tmp_path: Path, book: LeaseBook, holders: list[Holder]
) -> None:
    # A process killed while waiting never held the lease; the next waiter gets it normally.
    first = Holder(tmp_path, "xen1", "first")
    holders.append(first)
    assert (first.line(20) or "").startswith("held")
    waiter = Holder(tmp_path, "xen1", "killed while waiting")
    holders.append(waiter)
    assert waiter.line(1) is None
    os.kill(waiter.pid, signal.SIGKILL)
    waiter.proc.wait(timeout=10)
    info = book.holder("xen1")
    assert info is not None and info.pid == first.pid
    first.let_go()
    assert first.line(10) == "released"
    with book.acquire("xen1", "next", Deadline(5)):
        info = book.holder("xen1")
        assert info is not None and info.purpose == "next"


def test_an_unreachable_store_is_infra_trouble_for_its_leases(tmp_path: Path) -> None:
    """What Lab.close relies on: a store it cannot ask is InfraError, so the emulators this
    command started are ended, while a bug in kbisect still surfaces."""
    book = StoreLeases(f"postgresql://kbisect@/kbisect?host={tmp_path}", TIMEOUT)
    with pytest.raises(InfraError, match="cannot reach the store"):
        book.holder("xen1")
