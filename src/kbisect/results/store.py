"""The results store: one SQLite file or a shared PostgreSQL database, the source of truth
for runs, cells, builds and hosts.

Every write is one transaction (kbisect.results.connection): a cell is written whole or not at
all (its subtests, evidence and log references in the same transaction), so a killed run leaves
no half cell, and recording a cell again under the same identity replaces it, which is what
resuming a run does. Logs stay files under the results directory; the store keeps their
relative paths. The tables are in kbisect.results.schema, the reads in kbisect.results.queries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from kbisect.errors import UserError
from kbisect.results.connection import Database
from kbisect.results.model import (
    BisectionRecord,
    BuildRecord,
    CellRecord,
    ChangeRecord,
    LogKind,
    ResultStatus,
    RunRecord,
    RunStatus,
    TrialRecord,
)
from kbisect.results.queries import SAME_CELL, StoreQueries
from kbisect.results.schema import encode_json, encode_time, fingerprint_hash

_INSERT_CELL = (
    "INSERT INTO cells (run_id, tree, rev, variant, profile, host, job, repeat, status, reason, "
    "commit_id, patch_hash, build_key, started, finished, boot_seconds, fingerprint_id) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
)


class ResultsStore(StoreQueries):
    """A results directory's database. Open with ``ResultsStore(results_dir)``; close when done
    (or use it as a context manager). The reads are StoreQueries'; the writes are here."""

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
        when = encode_time(started or datetime.now(UTC))
        run_id = self._insert(
            "INSERT INTO runs (kind, pipeline, started, status, meta) VALUES (?, ?, ?, ?, ?)",
            (kind, pipeline, when, RunStatus.RUNNING.value, encode_json(dict(meta or {}))),
        )
        return self._stored_run(run_id)

    def finish_run(
        self,
        run_id: int,
        status: RunStatus = RunStatus.FINISHED,
        *,
        finished: datetime | None = None,
    ) -> RunRecord:
        when = encode_time(finished or datetime.now(UTC))
        self._update_one(
            f"run {run_id}",
            "UPDATE runs SET status = ?, finished = ? WHERE id = ?",
            (status.value, when, run_id),
        )
        return self._stored_run(run_id)

    def claim_finish(self, run_id: int) -> bool:
        """Whether this controller is the one to finish a running run: the first to ask (its
        finish time is set now), when several controllers share it."""
        when = encode_time(datetime.now(UTC))
        with self._write() as conn:
            claimed = conn.execute(
                "UPDATE runs SET finished = ? WHERE id = ? AND status = ? AND finished IS NULL",
                (when, run_id, RunStatus.RUNNING.value),
            ).rowcount
        return bool(claimed == 1)

    def _stored_run(self, run_id: int) -> RunRecord:
        run = self.get_run(run_id)
        assert run is not None  # just written
        return run

    # -- cells -----------------------------------------------------------------------------------

    def record_cell(self, run_id: int, cell: CellRecord) -> int:
        """Store a cell with its subtests, evidence and logs in one transaction; its new id.

        A cell with the same identity already in the run is replaced (resume re-runs cells).
        """
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
                raise UserError(f"no run {run_id} in {self.path}")
            conn.execute("DELETE FROM cells WHERE " + SAME_CELL, (run_id, *cell.identity))  # noqa: S608 (constants)
            cell_id = self._insert_cell(conn, run_id, cell)
            self._insert_children(conn, cell_id, cell)
        return cell_id

    def _insert_cell(self, conn: Database, run_id: int, cell: CellRecord) -> int:
        fp_id = self._fingerprint_id(conn, cell.fingerprint) if cell.fingerprint else None
        row = conn.execute(
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
                cell.boot_seconds,
                fp_id,
            ),
        ).fetchone()
        return int(row[0])

    def _insert_children(self, conn: Database, cell_id: int, cell: CellRecord) -> None:
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

    # -- host fingerprints -----------------------------------------------------------------------

    def record_fingerprint(self, fingerprint: Mapping[str, str]) -> int:
        """The id of this fingerprint, stored once per distinct content."""
        with self._write() as conn:
            return self._fingerprint_id(conn, fingerprint)

    def _fingerprint_id(self, conn: Database, fingerprint: Mapping[str, str]) -> int:
        for k, v in fingerprint.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ValueError(f"fingerprint entries are strings: {k!r}: {v!r}")
        digest = fingerprint_hash(fingerprint)
        conn.execute(
            "INSERT INTO fingerprints (hash, data) VALUES (?, ?) ON CONFLICT (hash) DO NOTHING",
            (digest, encode_json(dict(fingerprint))),
        )
        row = conn.execute("SELECT id FROM fingerprints WHERE hash = ?", (digest,)).fetchone()
        return int(row[0])

    # -- builds ----------------------------------------------------------------------------------

    def record_build(self, build: BuildRecord) -> None:
        """Store (or update) what is known about a build key."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO builds (build_key, status, log, errors, meta, recorded) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (build_key) DO UPDATE SET "
                "status = excluded.status, log = excluded.log, errors = excluded.errors, "
                "meta = excluded.meta, recorded = excluded.recorded",
                (
                    build.key,
                    build.status,
                    build.log,
                    encode_json(list(build.errors)),
                    encode_json(build.meta),
                    encode_time(build.recorded or datetime.now(UTC)),
                ),
            )

    # -- bisections ------------------------------------------------------------------------------

    def create_bisection(self, request: Mapping[str, Any]) -> BisectionRecord:
        """A new bisection in status "running"; `request` is what is needed to resume it."""
        now = encode_time(datetime.now(UTC))
        bisection_id = self._insert(
            "INSERT INTO bisections (created, updated, status, request) VALUES (?, ?, ?, ?)",
            (now, now, RunStatus.RUNNING.value, encode_json(dict(request))),
        )
        found = self.get_bisection(bisection_id)
        assert found is not None
        return found

    def finish_bisection(
        self, bisection_id: int, status: str, report: Mapping[str, Any] | None
    ) -> None:
        report_json = None if report is None else encode_json(dict(report))
        self._update_one(
            f"bisection {bisection_id}",
            "UPDATE bisections SET status = ?, report = ?, updated = ? WHERE id = ?",
            (status, report_json, encode_time(datetime.now(UTC)), bisection_id),
        )

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

    # -- regression tracking ---------------------------------------------------------------------

    def record_changes(self, run_id: int, changes: Sequence[ChangeRecord]) -> None:
        """A run's classified subtests (replacing any earlier classification of the run)."""
        with self._write() as conn:
            conn.execute("DELETE FROM changes WHERE run_id = ?", (run_id,))
            conn.executemany(
                "INSERT INTO changes (run_id, tree, rev, variant, profile, host, job, subtest, "
                "class, passes, fails, errors, baseline_run, baseline_status, last_pass_run) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, *change.key, *change[1:]) for change in changes],  # in field order
            )

    def open_regression(
        self, line: tuple[str, str, str, str, str, str], run_id: int, rev: str, good_rev: str | None
    ) -> int:
        return self._insert(
            "INSERT INTO regressions (tree, variant, profile, host, job, subtest, opened_run, "
            "opened_rev, good_rev, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'open')",
            (*line, run_id, rev, good_rev),
        )

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

    # -- one-row writes --------------------------------------------------------------------------

    def _insert(self, sql: str, params: tuple[Any, ...]) -> int:
        """One row added in a transaction of its own; its id (``sql`` is an INSERT)."""
        with self._write() as conn:
            row = conn.execute(sql + " RETURNING id", params).fetchone()
        return int(row[0])

    def _update_one(self, what: str, sql: str, params: tuple[Any, ...]) -> None:
        """One row changed in a transaction of its own; ``what`` names it if it is not there."""
        with self._write() as conn:
            if conn.execute(sql, params).rowcount != 1:
                raise UserError(f"no {what} in {self.path}")
