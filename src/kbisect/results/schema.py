"""The results store's tables, the migrations that make them, and how columns hold values.

The schema is versioned: MIGRATIONS[i] takes the store from version i to i + 1, and opening a
store applies whatever is missing. Add a migration (bisections, say); never edit an old one.
Times are kept as ISO text in UTC, structured values as compact JSON with sorted keys.
The migrations are written in SQLite's spelling; a Dialect (kbisect.results.connection) gives
PostgreSQL's column types, and a statement for one backend only is marked with ``Only``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from kbisect.errors import UserError

DB_NAME = "kbisect.sqlite"


@dataclass(frozen=True)
class Only:
    """A migration statement for one backend only (``dialect``: a Dialect's name)."""

    dialect: str
    statement: str


@dataclass(frozen=True)
class Dialect:
    """What migrating needs to know of a backend (instances in kbisect.results.connection)."""

    name: str
    begin_write: tuple[str, ...]
    table_exists: str
    ddl: Callable[[str], str]


SQLITE = Dialect(
    name="sqlite",
    begin_write=("BEGIN IMMEDIATE",),
    table_exists="SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
    ddl=lambda statement: statement,
)
"""The default backend, whose spelling the schema and the queries are written in (PostgreSQL's
Dialect is in kbisect.results.connection)."""


class _Connection(Protocol):
    def execute(self, sql: str, parameters: Any = (), /) -> Any: ...


MIGRATIONS: tuple[tuple[str | Only, ...], ...] = (
    (
        "CREATE TABLE schema_version (version INTEGER NOT NULL)",
        "INSERT INTO schema_version (version) VALUES (0)",
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            pipeline TEXT,
            started TEXT NOT NULL,
            finished TEXT,
            status TEXT NOT NULL,
            meta TEXT NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX runs_by_start ON runs (started)",
        """CREATE TABLE fingerprints (
            id INTEGER PRIMARY KEY,
            hash TEXT NOT NULL UNIQUE,
            data TEXT NOT NULL
        )""",
        """CREATE TABLE builds (
            build_key TEXT PRIMARY KEY,
            status TEXT NOT NULL,
            log TEXT,
            errors TEXT NOT NULL DEFAULT '[]',
            meta TEXT NOT NULL DEFAULT '{}',
            recorded TEXT NOT NULL
        )""",
        """CREATE TABLE cells (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            tree TEXT NOT NULL,
            rev TEXT NOT NULL,
            variant TEXT NOT NULL,
            profile TEXT NOT NULL,
            host TEXT NOT NULL,
            job TEXT NOT NULL,
            repeat INTEGER NOT NULL,
            status TEXT NOT NULL,
            reason TEXT NOT NULL,
            commit_id TEXT,
            patch_hash TEXT,
            build_key TEXT,
            started TEXT,
            finished TEXT,
            fingerprint_id INTEGER REFERENCES fingerprints (id),
            UNIQUE (run_id, tree, rev, variant, profile, host, job, repeat)
        )""",
        "CREATE INDEX cells_by_identity ON cells (tree, rev, variant, profile, host, job)",
        """CREATE TABLE subtests (
            cell_id INTEGER NOT NULL REFERENCES cells (id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            name TEXT NOT NULL,
            status TEXT NOT NULL,
            errno INTEGER NOT NULL,
            detail TEXT NOT NULL,
            signal INTEGER,
            timed_out INTEGER NOT NULL,
            PRIMARY KEY (cell_id, seq)
        )""",
        """CREATE TABLE evidence (
            cell_id INTEGER NOT NULL REFERENCES cells (id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            signature TEXT NOT NULL,
            source TEXT NOT NULL,
            line INTEGER NOT NULL,
            lines TEXT NOT NULL,
            also TEXT NOT NULL,
            strong INTEGER NOT NULL,
            more INTEGER NOT NULL,
            PRIMARY KEY (cell_id, seq)
        )""",
        """CREATE TABLE logs (
            cell_id INTEGER NOT NULL REFERENCES cells (id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            kind TEXT NOT NULL,
            path TEXT NOT NULL,
            PRIMARY KEY (cell_id, seq)
        )""",
    ),
    (
        """CREATE TABLE bisections (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            created TEXT NOT NULL,
            updated TEXT NOT NULL,
            status TEXT NOT NULL,
            request TEXT NOT NULL,
            report TEXT
        )""",
        """CREATE TABLE bisect_trials (
            bisection_id INTEGER NOT NULL REFERENCES bisections (id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            phase TEXT NOT NULL,
            commit_id TEXT NOT NULL,
            outcome TEXT NOT NULL,
            detail TEXT NOT NULL,
            identity TEXT,
            seconds REAL NOT NULL,
            finished TEXT NOT NULL,
            PRIMARY KEY (bisection_id, seq)
        )""",
    ),
    (
        """CREATE TABLE changes (
            run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            tree TEXT NOT NULL,
            rev TEXT NOT NULL,
            variant TEXT NOT NULL,
            profile TEXT NOT NULL,
            host TEXT NOT NULL,
            job TEXT NOT NULL,
            subtest TEXT NOT NULL,
            class TEXT NOT NULL,
            passes INTEGER NOT NULL,
            fails INTEGER NOT NULL,
            errors INTEGER NOT NULL,
            baseline_run INTEGER,
            baseline_status TEXT,
            last_pass_run INTEGER,
            PRIMARY KEY (run_id, tree, rev, variant, profile, host, job, subtest)
        )""",
        """CREATE TABLE regressions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            tree TEXT NOT NULL,
            variant TEXT NOT NULL,
            profile TEXT NOT NULL,
            host TEXT NOT NULL,
            job TEXT NOT NULL,
            subtest TEXT NOT NULL,
            opened_run INTEGER NOT NULL,
            opened_rev TEXT NOT NULL,
            good_rev TEXT,
            status TEXT NOT NULL,
            fixed_run INTEGER,
            fixed_rev TEXT,
            bisection_id INTEGER
        )""",
        "CREATE INDEX regressions_open ON regressions (status)",
    ),
    (
        # the browser's signatures count changes by rowid, which PostgreSQL has not by itself
        Only(
            "postgresql", "ALTER TABLE changes ADD COLUMN rowid BIGINT GENERATED ALWAYS AS IDENTITY"
        ),
        # host leases of a shared store (kbisect.lab.store_lease); times are the server's clock
        # in seconds since the epoch, so that controllers with skewed clocks agree on expiry
        """CREATE TABLE leases (
            host TEXT PRIMARY KEY,
            token TEXT NOT NULL,
            controller TEXT NOT NULL,
            pid INTEGER NOT NULL,
            user_name TEXT NOT NULL,
            purpose TEXT NOT NULL,
            since REAL NOT NULL,
            heartbeat REAL NOT NULL,
            expires REAL NOT NULL
        )""",
    ),
    (
        # how long the deploy that booted a cell's kernel took (NULL: the cell did not boot
        # one, or was recorded before this column)
        "ALTER TABLE cells ADD COLUMN boot_seconds REAL",
    ),
)
"""MIGRATIONS[i]: the statements that take the schema from version i to i + 1.

Run and cell ids are AUTOINCREMENT: an id once committed never names anything else later (a
replaced cell gets a new id), so links to them stay true.
"""

SCHEMA_VERSION = len(MIGRATIONS)


def encode_time(value: datetime | None) -> str | None:
    """A time as the store keeps it: ISO text in UTC, to the microsecond."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: the store keeps aware (UTC) times")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def decode_time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def encode_json(value: Any) -> str:
    """A value as the store keeps it in a JSON column (and as a JSON array parameter)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint_hash(fingerprint: Mapping[str, str]) -> str:
    """The content hash a host fingerprint is stored under."""
    return hashlib.sha256(encode_json(dict(fingerprint)).encode()).hexdigest()


def _schema_version(conn: _Connection, dialect: Dialect) -> int:
    if conn.execute(dialect.table_exists, ("schema_version",)).fetchone() is None:
        return 0
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    return int(row[0])


def migrate(conn: _Connection, where: str = DB_NAME, dialect: Dialect | None = None) -> int:
    """Bring the schema to SCHEMA_VERSION, one transaction per migration; the version reached.

    ``conn`` must be in autocommit mode (isolation_level None). Concurrent openers are safe: each
    migration re-reads the version under the write lock. ``dialect`` defaults to SQLite's.
    """
    dialect = dialect or SQLITE
    while True:
        for statement in dialect.begin_write:
            conn.execute(statement)
        try:
            version = _schema_version(conn, dialect)
            if version > SCHEMA_VERSION:
                raise UserError(
                    f"{where} has schema version {version}; this kbisect knows up to "
                    f"{SCHEMA_VERSION}: upgrade kbisect"
                )
            if version == SCHEMA_VERSION:
                conn.execute("COMMIT")
                return version
            for step in MIGRATIONS[version]:
                if isinstance(step, Only) and step.dialect != dialect.name:
                    continue
                _execute_ddl(conn, dialect.ddl(step.statement if isinstance(step, Only) else step))
            conn.execute("UPDATE schema_version SET version = ?", (version + 1,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _execute_ddl(conn: _Connection, statement: str) -> None:
    """A schema statement as it is (no placeholders to translate)."""
    execute_ddl = getattr(conn, "execute_ddl", None)
    if execute_ddl is not None:
        execute_ddl(statement)
    else:
        conn.execute(statement)
