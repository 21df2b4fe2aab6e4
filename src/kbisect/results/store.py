"""The results store: one SQLite file, the source of truth for runs, cells, builds and hosts.

SQLite in WAL mode lets readers (the browser, a report) work while a run writes, and several
kbisect processes write to one store: every write is one ``BEGIN IMMEDIATE`` transaction that
waits up to a busy timeout for the others. A cell is written whole or not at all (its subtests,
evidence and log references in the same transaction), so a killed run leaves no half cell, and
recording a cell again under the same identity replaces it, which is what resuming a run does.
Logs stay files under the results directory; the store keeps their relative paths.

The tables, their migrations and how columns hold values are in kbisect.results.schema.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from kbisect.errors import InfraError, UserError
from kbisect.results.model import (
    BisectionRecord,
    BuildRecord,
    CellIdentity,
    CellRecord,
    ChangeRecord,
    Evidence,
    LogKind,
    LogRef,
    RegressionRecord,
    ResultStatus,
    RunRecord,
    RunStatus,
    SubtestKey,
    SubtestRecord,
    TrialRecord,
)
from kbisect.results.schema import (
    DB_NAME,
    decode_time,
    encode_json,
    encode_time,
    fingerprint_hash,
    migrate,
)

BUSY_TIMEOUT_S = 30.0


_INSERT_CELL = (
    "INSERT INTO cells (run_id, tree, rev, variant, profile, host, job, repeat, status, reason, "
    "commit_id, patch_hash, build_key, started, finished, fingerprint_id) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# Children of a set of cells, the ids passed as one JSON array parameter.
_SUBTESTS_OF = "SELECT * FROM subtests WHERE cell_id IN (SELECT value FROM json_each(?))"
_EVIDENCE_OF = "SELECT * FROM evidence WHERE cell_id IN (SELECT value FROM json_each(?))"
_LOGS_OF = "SELECT * FROM logs WHERE cell_id IN (SELECT value FROM json_each(?))"
_ORDER = " ORDER BY cell_id, seq"
# Children of the cells in an id range (True) or of a JSON array of cell ids (False): a cell's
# subtests as one JSON array of [seq, name, status, errno, detail, signal, timed_out] arrays (one
# row a cell: SQLite builds it in less than half of what fetching the rows costs), evidence and
# logs as rows.
_SUBTEST_ARRAYS = {
    True: "SELECT cell_id, json_group_array(json_array(seq, name, status, errno, detail, signal, "
    "timed_out)) FROM subtests WHERE cell_id BETWEEN ? AND ? GROUP BY cell_id",
    False: "SELECT cell_id, json_group_array(json_array(seq, name, status, errno, detail, "
    "signal, timed_out)) FROM subtests WHERE cell_id IN (SELECT value FROM json_each(?)) "
    "GROUP BY cell_id",
}
_EVIDENCE_ROWS = {
    True: "SELECT cell_id, signature, source, line, lines, also, strong, more FROM evidence "
    "WHERE cell_id BETWEEN ? AND ? ORDER BY cell_id, seq",
    False: "SELECT cell_id, signature, source, line, lines, also, strong, more FROM evidence "
    "WHERE cell_id IN (SELECT value FROM json_each(?)) ORDER BY cell_id, seq",
}
_LOG_ROWS = {
    True: "SELECT cell_id, kind, path FROM logs "
    "WHERE cell_id BETWEEN ? AND ? ORDER BY cell_id, seq",
    False: "SELECT cell_id, kind, path FROM logs "
    "WHERE cell_id IN (SELECT value FROM json_each(?)) ORDER BY cell_id, seq",
}


class ResultsStore:
    """A results directory's database. Open with ``ResultsStore(results_dir)``; close when done
    (or use it as a context manager)."""

    def __init__(self, results_dir: Path, *, busy_timeout: float = BUSY_TIMEOUT_S) -> None:
        self.results_dir = results_dir
        self.path = results_dir / DB_NAME
        try:
            results_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InfraError(f"cannot create the results directory {results_dir}: {e}") from None
        try:
            self._conn = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None)
        except sqlite3.Error as e:
            raise InfraError(f"cannot open the results store {self.path}: {e}") from None
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

    # -- plumbing ------------------------------------------------------------------------------

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """SQLite's operational failures (locked too long, disk full, not a database) are infra."""
        try:
            yield
        except sqlite3.DatabaseError as e:
            # Not its subclasses IntegrityError or ProgrammingError: those are kbisect's bugs.
            if type(e) not in (sqlite3.DatabaseError, sqlite3.OperationalError):
                raise
            raise InfraError(f"results store {self.path}: {e}") from None

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

    def log_path(self, ref: LogRef) -> Path:
        """Where a referenced log lives."""
        return self.results_dir / ref.path

    # -- runs ------------------------------------------------------------------------------------

    def start_run(
        self,
        kind: str,
        *,
        pipeline: str | None = None,
        meta: Mapping[str, Any] | None = None,
        started: datetime | None = None,
    ) -> RunRecord:
        """A new run in status "running" (it stays so until finish_run, also if kbisect dies)."""
        when = started or datetime.now(UTC)
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO runs (kind, pipeline, started, status, meta) VALUES (?, ?, ?, ?, ?)",
                (
                    kind,
                    pipeline,
                    encode_time(when),
                    RunStatus.RUNNING.value,
                    encode_json(dict(meta or {})),
                ),
            )
            run_id = cursor.lastrowid
        assert run_id is not None
        run = self.get_run(run_id)
        assert run is not None
        return run

    def finish_run(
        self,
        run_id: int,
        status: RunStatus = RunStatus.FINISHED,
        *,
        finished: datetime | None = None,
    ) -> RunRecord:
        when = finished or datetime.now(UTC)
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE runs SET status = ?, finished = ? WHERE id = ?",
                (status.value, encode_time(when), run_id),
            )
            if cursor.rowcount != 1:
                raise UserError(f"no run {run_id} in {self.path}")
        run = self.get_run(run_id)
        assert run is not None
        return run

    def get_run(self, run_id: int) -> RunRecord | None:
        rows = self._read("SELECT * FROM runs WHERE id = ?", (run_id,))
        return _run(rows[0]) if rows else None

    def runs(
        self, *, status: RunStatus | None = None, kind: str | None = None, limit: int | None = None
    ) -> list[RunRecord]:
        """Runs, newest first; ``status=RunStatus.RUNNING`` finds unfinished (resumable) ones."""
        sql = "SELECT * FROM runs WHERE (? IS NULL OR status = ?) AND (? IS NULL OR kind = ?)"
        sql += " ORDER BY started DESC, id DESC LIMIT ?"
        value = status.value if status else None
        rows = self._read(sql, (value, value, kind, kind, -1 if limit is None else limit))
        return [_run(row) for row in rows]

    # -- cells -----------------------------------------------------------------------------------

    def record_cell(self, run_id: int, cell: CellRecord) -> int:
        """Store a cell with its subtests, evidence and logs in one transaction; its new id.

        A cell with the same identity already in the run is replaced (resume re-runs cells).
        """
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
                raise UserError(f"no run {run_id} in {self.path}")
            identity = tuple(cell.identity)
            conn.execute(
                "DELETE FROM cells WHERE run_id = ? AND tree = ? AND rev = ? AND variant = ? "
                "AND profile = ? AND host = ? AND job = ? AND repeat = ?",
                (run_id, *identity),
            )
            cell_id = self._insert_cell(conn, run_id, cell)
            self._insert_children(conn, cell_id, cell)
        return cell_id

    def _insert_cell(self, conn: sqlite3.Connection, run_id: int, cell: CellRecord) -> int:
        fp_id = self._fingerprint_id(conn, cell.fingerprint) if cell.fingerprint else None
        cursor = conn.execute(
            _INSERT_CELL,
            (
                run_id,
                *cell.identity,
                ResultStatus(cell.status).value,
                cell.reason,
                cell.commit,
                cell.patch_hash,
                cell.build_key,
                encode_time(cell.started),
                encode_time(cell.finished),
                fp_id,
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def _insert_children(self, conn: sqlite3.Connection, cell_id: int, cell: CellRecord) -> None:
        conn.executemany(
            "INSERT INTO subtests VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    cell_id,
                    seq,
                    s.name,
                    ResultStatus(s.status).value,
                    s.errno,
                    s.detail,
                    s.signal,
                    int(s.timed_out),
                )
                for seq, s in enumerate(cell.subtests)
            ],
        )
        conn.executemany(
            "INSERT INTO evidence VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    cell_id,
                    seq,
                    e.signature,
                    LogKind(e.source).value,
                    e.line,
                    encode_json(list(e.lines)),
                    encode_json(list(e.also)),
                    int(e.strong),
                    e.more,
                )
                for seq, e in enumerate(cell.evidence)
            ],
        )
        conn.executemany(
            "INSERT INTO logs VALUES (?, ?, ?, ?)",
            [
                (cell_id, seq, LogKind(log.kind).value, log.path)
                for seq, log in enumerate(cell.logs)
            ],
        )

    def cells(self, run_id: int) -> list[CellRecord]:
        """A run's cells with everything, in the order they were (last) recorded."""
        with self._snapshot():
            rows = self._read("SELECT * FROM cells WHERE run_id = ? ORDER BY id", (run_id,))
            return self._cells(rows)

    def get_cell(self, cell_id: int) -> CellRecord | None:
        with self._snapshot():
            found = self._cells(self._read("SELECT * FROM cells WHERE id = ?", (cell_id,)))
        return found[0] if found else None

    def find_cell(self, run_id: int, identity: CellIdentity) -> CellRecord | None:
        """The cell of a run with this identity (resume asks before re-running it)."""
        with self._snapshot():
            rows = self._read(
                "SELECT id FROM cells WHERE run_id = ? AND tree = ? AND rev = ? AND variant = ? "
                "AND profile = ? AND host = ? AND job = ? AND repeat = ?",
                (run_id, *identity),
            )
            return self.get_cell(int(rows[0]["id"])) if rows else None

    def _cells(self, rows: list[sqlite3.Row]) -> list[CellRecord]:
        """Cells from their rows, with children read in one query per table (not per cell)."""
        params = (encode_json([row["id"] for row in rows]),)
        subtests: dict[int, list[SubtestRecord]] = {}
        for r in self._read(_SUBTESTS_OF + _ORDER, params):
            subtests.setdefault(r["cell_id"], []).append(
                SubtestRecord(
                    r["name"],
                    ResultStatus(r["status"]),
                    r["errno"],
                    r["detail"],
                    r["signal"],
                    bool(r["timed_out"]),
                )
            )
        evidence: dict[int, list[Evidence]] = {}
        for r in self._read(_EVIDENCE_OF + _ORDER, params):
            evidence.setdefault(r["cell_id"], []).append(
                Evidence(
                    r["signature"],
                    LogKind(r["source"]),
                    r["line"],
                    tuple(json.loads(r["lines"])),
                    tuple(json.loads(r["also"])),
                    bool(r["strong"]),
                    r["more"],
                )
            )
        logs: dict[int, list[LogRef]] = {}
        for r in self._read(_LOGS_OF + _ORDER, params):
            logs.setdefault(r["cell_id"], []).append(LogRef(LogKind(r["kind"]), r["path"]))
        fingerprints: dict[int, dict[str, str]] = {}
        out: list[CellRecord] = []
        for row in rows:
            fp_id = row["fingerprint_id"]
            if fp_id is not None and fp_id not in fingerprints:
                fingerprints[fp_id] = self.get_fingerprint(fp_id)
            cell_id = row["id"]
            out.append(
                CellRecord(
                    tree=row["tree"],
                    rev=row["rev"],
                    variant=row["variant"],
                    profile=row["profile"],
                    host=row["host"],
                    job=row["job"],
                    repeat=row["repeat"],
                    status=ResultStatus(row["status"]),
                    reason=row["reason"],
                    commit=row["commit_id"],
                    patch_hash=row["patch_hash"],
                    build_key=row["build_key"],
                    started=decode_time(row["started"]),
                    finished=decode_time(row["finished"]),
                    fingerprint=dict(fingerprints.get(fp_id, {})),
                    subtests=tuple(subtests.get(cell_id, ())),
                    logs=tuple(logs.get(cell_id, ())),
                    evidence=tuple(evidence.get(cell_id, ())),
                    id=cell_id,
                    run_id=row["run_id"],
                )
            )
        return out

    def cells_of_runs(self, run_ids: Sequence[int]) -> dict[int, list[CellRecord]]:
        """The cells of several runs, each run's as ``cells`` gives them, read in one snapshot
        with one query per table for all of them (for readers of many runs: the browser)."""
        out: dict[int, list[CellRecord]] = {run_id: [] for run_id in run_ids}
        if not out:
            return out
        statuses = {s.value: s for s in ResultStatus}
        kinds = {k.value: k for k in LogKind}
        conn = self._conn
        with self._snapshot(), self._errors():
            rows = conn.execute(
                "SELECT id, run_id, tree, rev, variant, profile, host, job, repeat, status, "
                "reason, commit_id, patch_hash, build_key, started, finished, fingerprint_id "
                "FROM cells WHERE run_id IN (SELECT value FROM json_each(?)) ORDER BY id",
                (encode_json(sorted(out)),),
            ).fetchall()
            if not rows:
                return out
            mine = {row[0] for row in rows}
            # children by cell id range (an index range), the few of other runs' cells dropped;
            # runs far apart: by their cells' ids
            where = rows[-1][0] - rows[0][0] < 4 * len(rows)
            if where:
                span: tuple[Any, ...] = (rows[0][0], rows[-1][0])
            else:
                span = (encode_json(sorted(mine)),)
            subtests: dict[int, tuple[SubtestRecord, ...]] = {}
            # immutable, and most cells of a line have the same ones run after run: cells with
            # the same array share one tuple of records
            same: dict[str, tuple[SubtestRecord, ...]] = {}
            for cell_id, array in conn.execute(_SUBTEST_ARRAYS[where], span):
                if cell_id in mine:
                    found = same.get(array)
                    if found is None:
                        found = _subtests_of(array, statuses)
                        if found is None:  # not as the store writes them: read as rows
                            found = self._subtest_rows(cell_id, statuses)
                        else:
                            same[array] = found
                    subtests[cell_id] = found
            evidence: dict[int, list[Evidence]] = {}
            for r in conn.execute(
                _EVIDENCE_ROWS[where],
                span,
            ):
                if r[0] in mine:
                    evidence.setdefault(r[0], []).append(
                        Evidence(
                            r[1],
                            kinds[r[2]],
                            r[3],
                            tuple(json.loads(r[4])),
                            tuple(json.loads(r[5])),
                            bool(r[6]),
                            r[7],
                        )
                    )
            logs: dict[int, list[LogRef]] = {}
            refs: dict[tuple[str, str], LogRef] = {}
            for cell_id, kind, path in conn.execute(
                _LOG_ROWS[where],
                span,
            ):
                if cell_id in mine:
                    ref = refs.get((kind, path))
                    if ref is None:  # immutable: cells that share a log (a build's) share it
                        ref = refs[(kind, path)] = LogRef(kinds[kind], path)
                    logs.setdefault(cell_id, []).append(ref)
            fingerprints: dict[int, dict[str, str]] = {}
            for (
                cell_id,
                run_id,
                tree,
                rev,
                variant,
                profile,
                host,
                job,
                repeat,
                status,
                reason,
                commit,
                patch_hash,
                build_key,
                started,
                finished,
                fp_id,
            ) in rows:
                if fp_id is not None and fp_id not in fingerprints:
                    fingerprints[fp_id] = self.get_fingerprint(fp_id)
                out[run_id].append(
                    CellRecord(
                        tree=tree,
                        rev=rev,
                        variant=variant,
                        profile=profile,
                        host=host,
                        job=job,
                        repeat=repeat,
                        status=statuses[status],
                        reason=reason,
                        commit=commit,
                        patch_hash=patch_hash,
                        build_key=build_key,
                        started=decode_time(started),
                        finished=decode_time(finished),
                        fingerprint=dict(fingerprints.get(fp_id, {})),
                        subtests=subtests.get(cell_id, ()),
                        logs=tuple(logs.get(cell_id, ())),
                        evidence=tuple(evidence.get(cell_id, ())),
                        id=cell_id,
                        run_id=run_id,
                    )
                )
        return out

    def _subtest_rows(
        self, cell_id: int, statuses: Mapping[str, ResultStatus]
    ) -> tuple[SubtestRecord, ...]:
        return tuple(
            SubtestRecord(name, statuses[status], errno, detail, signal, bool(timed_out))
            for name, status, errno, detail, signal, timed_out in self._conn.execute(
                "SELECT name, status, errno, detail, signal, timed_out FROM subtests "
                "WHERE cell_id = ? ORDER BY seq",
                (cell_id,),
            )
        )

    # -- host fingerprints -----------------------------------------------------------------------

    def record_fingerprint(self, fingerprint: Mapping[str, str]) -> int:
        """The id of this fingerprint, stored once per distinct content."""
        with self._write() as conn:
            return self._fingerprint_id(conn, fingerprint)

    def _fingerprint_id(self, conn: sqlite3.Connection, fingerprint: Mapping[str, str]) -> int:
        for k, v in fingerprint.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ValueError(f"fingerprint entries are strings: {k!r}: {v!r}")
        digest = fingerprint_hash(fingerprint)
        conn.execute(
            "INSERT OR IGNORE INTO fingerprints (hash, data) VALUES (?, ?)",
            (digest, encode_json(dict(fingerprint))),
        )
        row = conn.execute("SELECT id FROM fingerprints WHERE hash = ?", (digest,)).fetchone()
        return int(row[0])

    def get_fingerprint(self, fingerprint_id: int) -> dict[str, str]:
        rows = self._read("SELECT data FROM fingerprints WHERE id = ?", (fingerprint_id,))
        if not rows:
            raise UserError(f"no host fingerprint {fingerprint_id} in {self.path}")
        data: dict[str, str] = json.loads(rows[0]["data"])
        return data

    # -- builds ----------------------------------------------------------------------------------

    def record_build(self, build: BuildRecord) -> None:
        """Store (or update) what is known about a build key."""
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO builds (build_key, status, log, errors, meta, recorded) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    build.key,
                    build.status,
                    build.log,
                    encode_json(list(build.errors)),
                    encode_json(build.meta),
                    encode_time(build.recorded or datetime.now(UTC)),
                ),
            )

    def get_build(self, key: str) -> BuildRecord | None:
        rows = self._read("SELECT * FROM builds WHERE build_key = ?", (key,))
        if not rows:
            return None
        row = rows[0]
        return BuildRecord(
            key=row["build_key"],
            status=row["status"],
            log=row["log"],
            errors=tuple(json.loads(row["errors"])),
            meta=json.loads(row["meta"]),
            recorded=decode_time(row["recorded"]),
        )

    # -- bisections ------------------------------------------------------------------------------

    def create_bisection(self, request: Mapping[str, Any]) -> BisectionRecord:
        """A new bisection in status "running"; `request` is what is needed to resume it."""
        now = encode_time(datetime.now(UTC))
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO bisections (created, updated, status, request) VALUES (?, ?, ?, ?)",
                (now, now, RunStatus.RUNNING.value, encode_json(dict(request))),
            )
            bisection_id = cursor.lastrowid
        assert bisection_id is not None
        found = self.get_bisection(bisection_id)
        assert found is not None
        return found

    def get_bisection(self, bisection_id: int) -> BisectionRecord | None:
        rows = self._read("SELECT * FROM bisections WHERE id = ?", (bisection_id,))
        return _bisection(rows[0]) if rows else None

    def bisections(self, limit: int | None = None) -> list[BisectionRecord]:
        rows = self._read(
            "SELECT * FROM bisections ORDER BY id DESC LIMIT ?", (-1 if limit is None else limit,)
        )
        return [_bisection(row) for row in rows]

    def finish_bisection(
        self, bisection_id: int, status: str, report: Mapping[str, Any] | None
    ) -> None:
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE bisections SET status = ?, report = ?, updated = ? WHERE id = ?",
                (
                    status,
                    None if report is None else encode_json(dict(report)),
                    encode_time(datetime.now(UTC)),
                    bisection_id,
                ),
            )
            if cursor.rowcount != 1:
                raise UserError(f"no bisection {bisection_id} in {self.path}")

    def add_trial(self, bisection_id: int, trial: TrialRecord) -> None:
        """Record one predicate run the moment it ends (resume replays these)."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO bisect_trials (bisection_id, seq, phase, commit_id, outcome, detail, "
                "identity, seconds, finished) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    bisection_id,
                    trial.seq,
                    trial.phase,
                    trial.commit,
                    trial.outcome,
                    trial.detail,
                    trial.identity,
                    trial.seconds,
                    encode_time(trial.finished or datetime.now(UTC)),
                ),
            )
            conn.execute(
                "UPDATE bisections SET updated = ? WHERE id = ?",
                (encode_time(datetime.now(UTC)), bisection_id),
            )

    def trials(self, bisection_id: int) -> list[TrialRecord]:
        rows = self._read(
            "SELECT * FROM bisect_trials WHERE bisection_id = ? ORDER BY seq", (bisection_id,)
        )
        return [
            TrialRecord(
                seq=row["seq"],
                phase=row["phase"],
                commit=row["commit_id"],
                outcome=row["outcome"],
                detail=row["detail"],
                identity=row["identity"],
                seconds=row["seconds"],
                finished=decode_time(row["finished"]),
            )
            for row in rows
        ]

    # -- regression tracking ---------------------------------------------------------------------

    def record_changes(self, run_id: int, changes: Sequence[ChangeRecord]) -> None:
        """A run's classified subtests (replacing any earlier classification of the run)."""
        with self._write() as conn:
            conn.execute("DELETE FROM changes WHERE run_id = ?", (run_id,))
            conn.executemany(
                "INSERT INTO changes (run_id, tree, rev, variant, profile, host, job, subtest, "
                "class, passes, fails, errors, baseline_run, baseline_status, last_pass_run) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        run_id,
                        *c.key,
                        c.change,
                        c.passes,
                        c.fails,
                        c.errors,
                        c.baseline_run,
                        c.baseline_status,
                        c.last_pass_run,
                    )
                    for c in changes
                ],
            )

    def changes(self, run_id: int) -> list[ChangeRecord]:
        rows = self._read(
            "SELECT * FROM changes WHERE run_id = ? "
            "ORDER BY tree, rev, variant, profile, host, job, subtest",
            (run_id,),
        )
        return [
            ChangeRecord(
                key=SubtestKey(
                    r["tree"],
                    r["rev"],
                    r["variant"],
                    r["profile"],
                    r["host"],
                    r["job"],
                    r["subtest"],
                ),
                change=r["class"],
                passes=r["passes"],
                fails=r["fails"],
                errors=r["errors"],
                baseline_run=r["baseline_run"],
                baseline_status=r["baseline_status"],
                last_pass_run=r["last_pass_run"],
            )
            for r in rows
        ]

    def changes_of_runs(self, run_ids: Sequence[int]) -> dict[int, list[ChangeRecord]]:
        """The changes of several runs, each run's as ``changes`` gives them, in one query.

        A cell line's changes in a run come as one row (its subtests' in a JSON array built by
        SQLite: a third of what a row a change costs) and are put in ``changes``'s order here."""
        out: dict[int, list[ChangeRecord]] = {run_id: [] for run_id in run_ids}
        if not out:
            return out
        with self._snapshot(), self._errors():
            groups = self._conn.execute(
                "SELECT run_id, json_array(tree, rev, variant, profile, host, job), "
                "json_group_array(json_array(subtest, class, passes, fails, errors, baseline_run, "
                "baseline_status, last_pass_run)) FROM changes "
                "WHERE run_id IN (SELECT value FROM json_each(?)) "
                "GROUP BY run_id, tree, rev, variant, profile, host, job",
                (encode_json(sorted(out)),),
            ).fetchall()
            lines: dict[str, tuple[str, ...]] = {}  # runs share their cell lines
            decoded = []
            for run_id, line, array in groups:
                found = lines.get(line)
                if found is None:
                    found = lines[line] = tuple(json.loads(line))
                decoded.append((run_id, found, json.loads(array)))
        decoded.sort(key=_two)  # in changes's order: SQLite's (BINARY) is code points' too
        keys: dict[tuple[str, ...], dict[str, SubtestKey]] = {}  # runs share their keys
        for run_id, line_key, items in decoded:
            items.sort(key=_first)
            mine = out[run_id]
            of_line = keys.get(line_key)
            if of_line is None:
                of_line = keys[line_key] = {}
            for subtest, change, passes, fails, errors, base_run, base_status, pass_run in items:
                if not (
                    type(passes) is int
                    and type(fails) is int
                    and type(errors) is int
                    and (base_run is None or type(base_run) is int)
                    and (pass_run is None or type(pass_run) is int)
                ):
                    return self._changes_as_rows(out)  # no integer: not as written here
                key = of_line.get(subtest)
                if key is None:
                    key = of_line[subtest] = SubtestKey._make((*line_key, subtest))
                mine.append(
                    ChangeRecord(
                        key, change, passes, fails, errors, base_run, base_status, pass_run
                    )
                )
        return out

    def _changes_as_rows(self, out: dict[int, list[ChangeRecord]]) -> dict[int, list[ChangeRecord]]:
        """changes_of_runs a row a change, all in one snapshot (when the JSON arrays are not
        exact)."""
        with self._snapshot():
            for run_id in out:
                out[run_id] = self.changes(run_id)
        return out

    def regressions(self, status: str | None = None) -> list[RegressionRecord]:
        rows = self._read(
            "SELECT * FROM regressions WHERE (? IS NULL OR status = ?) ORDER BY id",
            (status, status),
        )
        return [_regression(r) for r in rows]

    def open_regression(
        self, line: tuple[str, str, str, str, str, str], run_id: int, rev: str, good_rev: str | None
    ) -> int:
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO regressions (tree, variant, profile, host, job, subtest, opened_run, "
                "opened_rev, good_rev, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'open')",
                (*line, run_id, rev, good_rev),
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def fix_regression(self, regression_id: int, run_id: int, rev: str) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE regressions SET status = 'fixed', fixed_run = ?, fixed_rev = ? "
                "WHERE id = ?",
                (run_id, rev, regression_id),
            )

    def link_bisection(self, regression_id: int, bisection_id: int) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE regressions SET bisection_id = ? WHERE id = ?",
                (bisection_id, regression_id),
            )

    # -- cheap signatures of content (for renderers that skip what did not change) -------------

    def signatures(self, marks: dict[str, Any]) -> tuple[dict[int, str], dict[str, str]]:
        """Per run, a signature of its cells and changes; per build key, of its record.

        Read in one snapshot, so that a run whose signature did not change need not be read at
        all (the results browser). A signature is the count, largest id and id sum of the run's
        cells and of its changes rows. Cell ids are AUTOINCREMENT and never reused (a replaced
        cell gets a new id) and writers take turns, so the runs that changed since the last call
        are the ones with a cell id, or a changes rowid (changes are replaced whole), above the
        largest seen then: ``marks`` (kept by the caller, updated here) holds those and every
        run's signature; with empty marks every run's signature is computed.
        """
        cells_sql = "SELECT run_id, count(*), max(id), total(id) FROM cells"
        changes_sql = "SELECT run_id, count(*), max(rowid), total(rowid) FROM changes"
        conn = self._conn
        with self._snapshot():
            top_cell = conn.execute("SELECT coalesce(max(id), 0) FROM cells").fetchone()[0]
            top_change = conn.execute("SELECT coalesce(max(rowid), 0) FROM changes").fetchone()[0]
            known: dict[str, list[str]] = marks.get("runs", {})
            # ids that went down mean another store (or this one made anew): trust no old mark
            if "cells" in marks and top_cell >= marks["cells"] and top_change >= marks["changes"]:
                changed = {
                    row[0]
                    for row in conn.execute(
                        "SELECT DISTINCT run_id FROM cells WHERE id > ? "
                        "UNION SELECT DISTINCT run_id FROM changes WHERE rowid > ?",
                        (marks["cells"], marks["changes"]),
                    )
                }
                where = " WHERE run_id IN (SELECT value FROM json_each(?)) GROUP BY run_id"
                params: tuple[Any, ...] = (encode_json(sorted(changed)),)
            else:
                changed, known = set(), {}
                where, params = " GROUP BY run_id", ()
            fresh: dict[int, list[str]] = {run_id: ["c0", "k0"] for run_id in changed}
            for run_id, n, top, total in conn.execute(cells_sql + where, params):
                fresh.setdefault(run_id, ["c0", "k0"])[0] = f"c{n}:{top}:{total:.0f}"
            for run_id, n, top, total in conn.execute(changes_sql + where, params):
                fresh.setdefault(run_id, ["c0", "k0"])[1] = f"k{n}:{top}:{total:.0f}"
            builds = {
                key: f"{status}|{recorded}|{log}"
                for key, status, recorded, log in conn.execute(
                    "SELECT build_key, status, recorded, log FROM builds"
                )
            }
        merged = {**known, **{str(k): v for k, v in fresh.items()}}
        marks.clear()
        marks.update(cells=top_cell, changes=top_change, runs=merged)
        return {int(k): "/".join(v) for k, v in merged.items()}, builds


def _subtests_of(
    array: str, statuses: Mapping[str, ResultStatus]
) -> tuple[SubtestRecord, ...] | None:
    """A cell's subtests from its _SUBTEST_ARRAYS array, in their order; None when a number in
    it is not an integer (JSON shows a real with 15 digits: those are read as rows)."""
    items = json.loads(array)
    items.sort(key=_first)  # SQLite adds the rows in the index's order; made sure of
    for item in items:
        if type(item[3]) is not int or not (item[5] is None or type(item[5]) is int):
            return None
    return tuple(
        SubtestRecord(name, statuses[status], errno, detail, signal, bool(timed_out))
        for _, name, status, errno, detail, signal, timed_out in items
    )


def _first(item: Sequence[Any]) -> Any:
    return item[0]


def _two(item: Sequence[Any]) -> Any:
    return item[:2]


def _regression(r: sqlite3.Row) -> RegressionRecord:
    return RegressionRecord(
        id=r["id"],
        line=(r["tree"], r["variant"], r["profile"], r["host"], r["job"], r["subtest"]),
        opened_run=r["opened_run"],
        opened_rev=r["opened_rev"],
        good_rev=r["good_rev"],
        status=r["status"],
        fixed_run=r["fixed_run"],
        fixed_rev=r["fixed_rev"],
        bisection_id=r["bisection_id"],
    )


def _bisection(row: sqlite3.Row) -> BisectionRecord:
    return BisectionRecord(
        id=row["id"],
        created=decode_time(row["created"]) or datetime.now(UTC),
        updated=decode_time(row["updated"]) or datetime.now(UTC),
        status=row["status"],
        request=json.loads(row["request"]),
        report=None if row["report"] is None else json.loads(row["report"]),
    )


def _run(row: sqlite3.Row) -> RunRecord:
    started = decode_time(row["started"])
    assert started is not None
    return RunRecord(
        id=row["id"],
        kind=row["kind"],
        pipeline=row["pipeline"],
        started=started,
        finished=decode_time(row["finished"]),
        status=RunStatus(row["status"]),
        meta=json.loads(row["meta"]),
    )
