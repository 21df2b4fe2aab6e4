"""A real PostgreSQL server for the tests: Debian's postgresql-15, made with initdb and started
with pg_ctl in a temporary directory, listening only on a Unix socket there, run by an
unprivileged user (PostgreSQL refuses to run as root), ended by its PID.

Each test gets a schema of its own in the one database (``store_url``): much cheaper than a
database each, and the store's tables are found in the current schema.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from kbisect.deadline import Deadline
from kbisect.processes import pid_alive

TEST_USER = "kbisect-test"
DATABASE = "kbisect_test"
_SEARCH = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin")
_numbers = itertools.count()


class ServerError(RuntimeError):
    """PostgreSQL could not be made or started here: what to install or fix."""


def _binary(name: str) -> str:
    for directory in _SEARCH:
        candidate = Path(directory) / name
        if candidate.is_file():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise ServerError(
            f"no {name}: install PostgreSQL 15 "
            "(apt-get install postgresql-15, or ./bootstrap --test)"
        )
    return found


def _unprivileged_user() -> tuple[int, int] | None:
    """(uid, gid) to run the server as when we are root (made if missing); None when not root."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(TEST_USER)
    except KeyError:
        made = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", TEST_USER],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if made.returncode != 0 and "already exists" not in made.stderr:
            raise ServerError(f"useradd {TEST_USER} failed: {made.stderr.strip()}") from None
        entry = pwd.getpwnam(TEST_USER)
    return entry.pw_uid, entry.pw_gid


@dataclass
class PostgresServer:
    directory: Path
    pid: int

    @property
    def socket_dir(self) -> Path:
        return self.directory / "socket"

    def url(self, schema: str | None = None) -> str:
        options = f"&options=-csearch_path%3D{schema}" if schema else ""
        return f"postgresql://kbisect@/{DATABASE}?host={self.socket_dir}{options}"

    def fresh_schema(self) -> str:
        """A new, empty schema; the URL of a store in it."""
        import psycopg

        name = f"t{os.getpid()}_{next(_numbers)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        return self.url(name)

    def stop(self) -> None:
        """Fast shutdown by its PID; SIGKILL if it is still there after the deadline."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGINT)
        deadline = Deadline(30)
        while pid_alive(self.pid) and not deadline.expired:
            time.sleep(0.05)
        if pid_alive(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        shutil.rmtree(self.directory, ignore_errors=True)


def start_server() -> PostgresServer:
    """initdb and pg_ctl start in a new temporary directory; ServerError says what went wrong."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    ids = _unprivileged_user()
    directory = Path(tempfile.mkdtemp(prefix="kbisect-pg-"))
    data, sockets, log = directory / "data", directory / "socket", directory / "server.log"
    sockets.mkdir()
    if ids is not None:
        for path in (directory, sockets):
            os.chown(path, *ids)
    as_user = {} if ids is None else {"user": ids[0], "group": ids[1], "extra_groups": []}

    def run(*argv: str) -> None:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=120, check=False, cwd=directory, **as_user
        )
        if done.returncode != 0:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise ServerError(f"{' '.join(argv[:2])} failed: {done.stderr.strip()}\n{tail}")

    try:
        run(initdb, "-D", str(data), "-U", "kbisect", "-A", "trust", "-E", "UTF8",
            "--locale=C", "--no-sync")  # fmt: skip
        options = f"-k {sockets} -c listen_addresses='' -c fsync=off -c max_connections=200"
        run(pg_ctl, "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start")
        pid = int((data / "postmaster.pid").read_text().split()[0])
        server = PostgresServer(directory, pid)
        run(str(Path(initdb).parent / "createdb"), "-h", str(sockets), "-U", "kbisect", DATABASE)
    except (ServerError, OSError, subprocess.TimeoutExpired, ValueError) as e:
        pid_file = data / "postmaster.pid"
        if pid_file.exists():
            PostgresServer(directory, int(pid_file.read_text().split()[0])).stop()
        shutil.rmtree(directory, ignore_errors=True)
        raise ServerError(f"cannot start PostgreSQL for the tests: {e}") from e
    return server
