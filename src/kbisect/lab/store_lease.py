"""Host leases in a shared store: every controller of a team sees and respects the same ones.

A lease is a row per host in the store's ``leases`` table: holder (controller host, pid, user),
purpose, heartbeat and expiry. It is taken by one statement (an upsert that only replaces an
expired row), so two controllers never both hold a host. Its holder heartbeats from a thread
every third of the timeout; a holder that dies stops, and its lease expires after the timeout
(settings.lease_timeout), so no host is lost to a dead holder. Times are the database server's
clock, which every controller shares. A lease held by hand (``kbisect lab.lease --hold``) has no
heartbeat: it lasts as long as asked.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from kbisect.closeable import Closeable
from kbisect.deadline import Deadline
from kbisect.errors import InfraError
from kbisect.lab.lease import FileLeases, LeaseInfo, check_host_name, current_user
from kbisect.results.connection import PgConnection, open_database, shown_url, store_url

_POLL_SECONDS = 0.2
_NOW = "extract(epoch from clock_timestamp())::float8"
_COLUMNS = "host, controller, pid, user_name, purpose, since, expires"
_TAKE = (
    "INSERT INTO leases (host, token, controller, pid, user_name, purpose, since, heartbeat, "  # noqa: S608
    f"expires) VALUES (?, ?, ?, ?, ?, ?, {_NOW}, {_NOW}, {_NOW} + ?) "
    "ON CONFLICT (host) DO UPDATE SET token = excluded.token, controller = excluded.controller, "
    "pid = excluded.pid, user_name = excluded.user_name, purpose = excluded.purpose, "
    "since = excluded.since, heartbeat = excluded.heartbeat, expires = excluded.expires "
    # xmax is not 0 on a row the upsert updated: the lease of a holder that died (or of an
    # expired reservation) was taken over, rather than a free host taken
    f"WHERE leases.expires < {_NOW} RETURNING {_COLUMNS}, xmax::text <> '0'"
)
_HEARTBEAT = (
    f"UPDATE leases SET heartbeat = {_NOW}, expires = {_NOW} + ? WHERE host = ? AND token = ?"  # noqa: S608
)
_LIVE = f"SELECT {_COLUMNS} FROM leases WHERE expires >= {_NOW}"  # noqa: S608 (constants)
_TAKE_BACK = f"DELETE FROM leases WHERE host = ? AND expires >= {_NOW} RETURNING {_COLUMNS}"  # noqa: S608


class HeldLease(Protocol):
    """A lease this process holds (a flock Lease or a StoreLease). ``inherited``: taken over
    from a holder that did not release it (it died, or its reservation ran out), so what that
    holder left on the host is not to be trusted."""

    info: LeaseInfo
    inherited: bool

    @property
    def held(self) -> bool: ...

    def release(self) -> None: ...

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: object) -> None: ...


class LeaseBook(Protocol):
    """Where a lab's host leases are kept: FileLeases on this machine, StoreLeases shared."""

    def describe(self) -> str: ...

    def acquire(self, host: str, purpose: str, deadline: Deadline) -> HeldLease: ...

    def holder(self, host: str) -> LeaseInfo | None: ...

    def holders(self) -> list[LeaseInfo]: ...

    def hold(self, host: str, purpose: str, seconds: float, say: Callable[[str], None]) -> None: ...

    def take_back(self, host: str) -> LeaseInfo | None: ...


def lease_book(leases_dir: Path, url: str | None, timeout: float) -> LeaseBook:
    """The shared store's leases when there is one (``url``, else $KBISECT_STORE), else this
    machine's in ``leases_dir``."""
    shared = store_url(url)
    return FileLeases(leases_dir) if shared is None else StoreLeases(shared, timeout)


def _info(row: Any) -> LeaseInfo:
    host, controller, pid, user, purpose, since, expires = row[:7]
    return LeaseInfo(
        host=host,
        pid=pid,
        user=user,
        hostname=controller,
        purpose=purpose,
        since=datetime.fromtimestamp(since, UTC),
        expires=datetime.fromtimestamp(expires, UTC),
    )


class StoreLeases:
    """Host leases in a shared PostgreSQL store (LeaseBook); ``timeout``: seconds a lease
    outlives its holder's last heartbeat."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = float(timeout)

    def describe(self) -> str:
        return f"in the shared store {shown_url(self.url)} (timeout {self.timeout:g} s)"

    def _try(
        self, conn: PgConnection, host: str, token: str, purpose: str, span: float
    ) -> tuple[LeaseInfo, bool] | None:
        """The lease taken and whether it was inherited; None while someone holds it."""
        row = conn.execute(
            _TAKE,
            (host, token, socket.gethostname(), os.getpid(), current_user(), purpose, span),
        ).fetchone()
        return None if row is None else (_info(row), bool(row[7]))

    def acquire(self, host: str, purpose: str, deadline: Deadline) -> StoreLease:
        """Take the host's lease, waiting for the holder (or its expiry) until the deadline;
        then InfraError names the holder."""
        check_host_name(host)
        token = uuid.uuid4().hex
        conn = open_database(self.url)
        try:
            while (taken := self._try(conn, host, token, purpose, self.timeout)) is None:
                if deadline.expired:
                    holder = self.holder(host)
                    who = holder.describe() if holder is not None else "another controller"
                    raise InfraError(
                        f"host {host} is leased by {who}; gave up waiting after "
                        f"{deadline.seconds:g} s"
                    )
                time.sleep(min(_POLL_SECONDS, max(deadline.remaining(), 0.01)))
        except BaseException:
            conn.close()
            raise
        info, inherited = taken
        return StoreLease(conn, info, token, self.timeout, inherited=inherited)

    def _rows(self, sql: str, params: tuple[Any, ...]) -> list[LeaseInfo]:
        conn = open_database(self.url)
        try:
            return [_info(row) for row in conn.execute(sql, params).fetchall()]
        except Exception as e:
            infra = conn.infra_error(e, f"the leases in {shown_url(self.url)}")
            if infra is None:
                raise
            raise infra from e
        finally:
            conn.close()

    def holder(self, host: str) -> LeaseInfo | None:
        """Who holds the host's lease, or None when it is free (an expired lease is free)."""
        check_host_name(host)
        found = self._rows(_LIVE + " AND host = ?", (host,))
        return found[0] if found else None

    def holders(self) -> list[LeaseInfo]:
        return self._rows(_LIVE + " ORDER BY host", ())

    def hold(self, host: str, purpose: str, seconds: float, say: Callable[[str], None]) -> None:
        """Reserve a host by hand for ``seconds``: a lease without heartbeat, which stays after
        this process ends (``lab.release HOST --force`` takes it back earlier)."""
        check_host_name(host)
        conn = open_database(self.url)
        try:
            taken = self._try(conn, host, uuid.uuid4().hex, purpose, seconds)
        finally:
            conn.close()
        if taken is None:
            holder = self.holder(host)
            who = holder.describe() if holder is not None else "another controller"
            raise InfraError(f"host {host} is leased by {who}")
        say(f"{host}: held by {taken[0].describe()}")

    def take_back(self, host: str) -> LeaseInfo | None:
        """End whoever's lease on the host (its holder, if alive, learns at its next
        heartbeat); the lease that was taken back, or None if there was none."""
        check_host_name(host)
        found = self._rows(_TAKE_BACK, (host,))
        return found[0] if found else None


class StoreLease(Closeable):
    """A held lease in a shared store, kept alive by a heartbeat thread until released."""

    def __init__(
        self,
        conn: PgConnection,
        info: LeaseInfo,
        token: str,
        timeout: float,
        *,
        inherited: bool = False,
    ) -> None:
        self.host = info.host
        self.info = info
        self.inherited = inherited
        self.lost = False  # set when a heartbeat finds the lease taken back or expired
        self._conn: PgConnection | None = conn
        self._token = token
        self._timeout = timeout
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._beat = threading.Thread(
            target=self._heartbeat, name=f"lease-{self.host}", daemon=True
        )
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self._timeout / 3):
            with self._lock:
                if self._conn is None:
                    return
                try:
                    updated = self._conn.execute(
                        _HEARTBEAT, (self._timeout, self.host, self._token)
                    ).rowcount
                except Exception:  # noqa: S112 (the server may be back at the next beat)
                    continue
            if updated != 1:
                self.lost = True
                return

    @property
    def held(self) -> bool:
        return self._conn is not None and not self.lost

    def release(self) -> None:
        self._stop.set()
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is None:
            return
        self._beat.join(timeout=10)
        try:
            with contextlib.suppress(Exception):  # an unreachable store: the lease expires
                conn.execute(
                    "DELETE FROM leases WHERE host = ? AND token = ?", (self.host, self._token)
                )
        finally:
            conn.close()

    close = release  # what leaving the with block calls
