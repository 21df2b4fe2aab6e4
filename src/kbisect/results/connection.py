"""Opening a results store, and the transactions its reads and writes run in.

SQLite in WAL mode lets readers (the browser, a report) work while a run writes, and several
kbisect processes write to one store: every write is one ``BEGIN IMMEDIATE`` transaction that
waits up to a busy timeout for the others. Reads that must agree with each other run in one
snapshot. SQLite's operational failures are infrastructure errors, never a traceback.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kbisect.closeable import Closeable
from kbisect.errors import InfraError
from kbisect.results.model import LogRef
from kbisect.results.schema import DB_NAME, migrate

BUSY_TIMEOUT_S = 30.0


class StoreConnection(Closeable):
    """The store's SQLite file, open and at the current schema; the base of ResultsStore."""

    def __init__(self, results_dir: Path, *, busy_timeout: float = BUSY_TIMEOUT_S) -> None:
        self.results_dir = results_dir
        self.path = results_dir / DB_NAME
        try:
            results_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InfraError(f"cannot create the results directory {results_dir}: {e}") from e
        try:
            self._conn = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None)
        except sqlite3.Error as e:
            raise InfraError(f"cannot open the results store {self.path}: {e}") from e
        try:
            with self._errors():
                mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode != "wal":
                    raise InfraError(f"{self.path}: SQLite refused WAL mode (got {mode!r})")
                self._conn.execute("PRAGMA synchronous = FULL")
                self._conn.execute("PRAGMA foreign_keys = ON")
                migrate(self._conn, str(self.path))
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        self._conn.close()

    def log_path(self, ref: LogRef) -> Path:
        """Where a referenced log lives."""
        return self.results_dir / ref.path

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """SQLite's operational failures (locked too long, disk full, not a database) are infra."""
        try:
            yield
        except sqlite3.DatabaseError as e:
            # Not its subclasses IntegrityError or ProgrammingError: those are kbisect's bugs.
            if type(e) not in (sqlite3.DatabaseError, sqlite3.OperationalError):
                raise
            raise InfraError(f"results store {self.path}: {e}") from e

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[None]:
        """Several reads that see one state of the store, even while others write."""
        if self._conn.in_transaction:
            yield
            return
        with self._errors():
            self._conn.execute("BEGIN")
            try:
                yield
            finally:
                self._conn.execute("COMMIT")

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it or none of it."""
        with self._errors():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._errors():
            cursor = self._conn.execute(sql, params)
            cursor.row_factory = sqlite3.Row
            return list(cursor.fetchall())
