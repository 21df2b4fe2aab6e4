"""Reading the results store: runs, cells, builds, bisections, changes and regressions.

Readers of many runs (the results browser) use the batched reads, ``cells_of_runs`` and
``changes_of_runs``: one query per table for all the runs, in one snapshot, with children that
SQLite packs into one JSON array per cell or cell line (cheaper than a row each). They give
what the plain reads (``cells``, ``changes``) give, which the tests hold them against.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from kbisect.errors import UserError
from kbisect.results.connection import Database, StoreConnection
from kbisect.results.model import (
    BisectionRecord,
    BuildRecord,
    CellIdentity,
    CellRecord,
    Change,
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
from kbisect.results.schema import decode_time, encode_json

_STATUSES = {s.value: s for s in ResultStatus}
_CHANGES = {c.value: c for c in Change}
_KINDS = {k.value: k for k in LogKind}

_CELL_COLUMNS = (
    "id, run_id, tree, rev, variant, profile, host, job, repeat, status, reason, commit_id, "
    "patch_hash, build_key, started, finished, boot_seconds, fingerprint_id"
)
SAME_CELL = "run_id = ? AND " + " AND ".join(f"{name} = ?" for name in CellIdentity._fields)
"""The condition on cells that picks a run's cell by its identity: (run_id, *identity)."""

Span = tuple[Any, ...]
"""Which cells' children to read: the ends of an id range, or a JSON array of ids."""


def _of_cells(sql: str) -> dict[bool, str]:
    """``sql`` (``{cells}`` standing for the condition) for the children of the cells in an id
    range (True) or in a JSON array of ids (False)."""
    return {
        True: sql.format(cells="cell_id BETWEEN ? AND ?"),
        False: sql.format(cells="cell_id IN (SELECT value FROM json_each(?))"),
    }


# A cell's subtests as one JSON array of [seq, name, status, errno, detail, signal, timed_out]
# arrays (one row a cell: SQLite builds it in less than half of what fetching the rows costs).
_SUBTEST_ARRAYS = _of_cells(
    "SELECT cell_id, json_group_array(json_array(seq, name, status, errno, detail, signal, "
    "timed_out)) FROM subtests WHERE {cells} GROUP BY cell_id"
)
_SUBTEST_ROWS = _of_cells(
    "SELECT cell_id, name, status, errno, detail, signal, timed_out FROM subtests "
    "WHERE {cells} ORDER BY cell_id, seq"
)
_EVIDENCE_ROWS = _of_cells(
    "SELECT cell_id, signature, source, line, lines, also, strong, more FROM evidence "
    "WHERE {cells} ORDER BY cell_id, seq"
)
_LOG_ROWS = _of_cells("SELECT cell_id, kind, path FROM logs WHERE {cells} ORDER BY cell_id, seq")

# A build's duration from its meta: SQLite's JSON functions, PostgreSQL's (whose casts refuse
# what json_valid would skip: the store writes only valid JSON).
_BUILD_SECONDS = {
    "sqlite": "SELECT build_key, json_extract(meta, '$.duration_s') FROM builds "
    "WHERE json_valid(meta) AND json_type(meta, '$.duration_s') IN ('integer', 'real')",
    "postgresql": "SELECT build_key, (meta::jsonb ->> 'duration_s')::float FROM builds "
    "WHERE jsonb_typeof(meta::jsonb -> 'duration_s') = 'number'",
}

_CHANGE_COLUMNS = (
    "tree, rev, variant, profile, host, job, subtest, class, passes, fails, errors, "
    "baseline_run, baseline_status, last_pass_run"
)


class StoreQueries(StoreConnection):
    """The store's reads; ResultsStore adds the writes."""

    # -- runs ------------------------------------------------------------------------------------

    def get_run(self, run_id: int) -> RunRecord | None:
        rows = self._read("SELECT * FROM runs WHERE id = ?", (run_id,))
        return _run(rows[0]) if rows else None

    def runs(
        self, *, status: RunStatus | None = None, kind: str | None = None, limit: int | None = None
    ) -> list[RunRecord]:
        """Runs, newest first; ``status=RunStatus.RUNNING`` finds unfinished (resumable) ones."""
        where, params = _conditions(status=status.value if status else None, kind=kind)
        sql = f"SELECT * FROM runs{where} ORDER BY started DESC, id DESC"  # noqa: S608 (constants)
        rows = self._read(*_limited(sql, params, limit))
        return [_run(row) for row in rows]

    def referenced_files(self) -> list[str]:
        """Every file the store refers to, relative to the results directory: the cells' logs,
        the builds' logs, each run's junit.xml and summary.txt (what the browser may link)."""
        rows = self._read(
            "SELECT path FROM logs UNION SELECT log FROM builds WHERE log IS NOT NULL "
            "UNION SELECT 'runs/' || id || '/junit.xml' FROM runs "
            "UNION SELECT 'runs/' || id || '/summary.txt' FROM runs"
        )
        return [str(row[0]) for row in rows]

    # -- cells -----------------------------------------------------------------------------------

    def cells(self, run_id: int) -> list[CellRecord]:
        """A run's cells with everything, in the order they were (last) recorded."""
        return self._read_cells("run_id = ?", (run_id,), batched=False)

    def get_cell(self, cell_id: int) -> CellRecord | None:
        found = self._read_cells("id = ?", (cell_id,), batched=False)
        return found[0] if found else None

    def find_cell(self, run_id: int, identity: CellIdentity) -> CellRecord | None:
        """The cell of a run with this identity (resume asks before re-running it)."""
        found = self._read_cells(SAME_CELL, (run_id, *identity), batched=False)
        return found[0] if found else None

    def cells_of_runs(self, run_ids: Sequence[int]) -> dict[int, list[CellRecord]]:
        """The cells of several runs, each run's as ``cells`` gives them, read in one snapshot
        with one query per table for all of them (for readers of many runs: the browser)."""
        out: dict[int, list[CellRecord]] = {run_id: [] for run_id in run_ids}
        if not out:
            return out
        where = "run_id IN (SELECT value FROM json_each(?))"
        for cell in self._read_cells(where, (encode_json(sorted(out)),), batched=True):
            assert cell.run_id is not None  # the store sets it
            out[cell.run_id].append(cell)
        return out

    def experiment_cells(
        self,
        experiment: str,
        *,
        since_run: int | None = None,
        host: str | None = None,
        run_ids: Sequence[int] | None = None,
    ) -> list[CellRecord]:
        """Every cell of an experiment's variants (named EXPERIMENT/VARIANT), in id order, from
        run ``since_run`` on, on ``host`` and of the runs ``run_ids`` when given (a findings
        report reads all of them). A range on the name: both dialects compare text by code
        point, and "0" follows "/"."""
        where = "variant >= ? AND variant < ?"
        params: tuple[Any, ...] = (f"{experiment}/", f"{experiment}0")
        if since_run is not None:
            where, params = f"{where} AND run_id >= ?", (*params, since_run)
        if host is not None:
            where, params = f"{where} AND host = ?", (*params, host)
        if run_ids is not None:
            where += " AND run_id IN (SELECT value FROM json_each(?))"
            params = (*params, encode_json(sorted(run_ids)))
        return self._read_cells(where, params, batched=True)

    def _read_cells(self, where: str, params: Span, *, batched: bool) -> list[CellRecord]:
        """The cells ``where`` (a condition on cells) picks, in id order, with everything.

        Their children come in one query per table, by the cells' ids. ``batched`` (for many
        cells) reads them by the cells' id range instead when it is dense (an index range; the
        few of other runs' cells dropped), and each cell's subtests as one JSON array.
        """
        conn = self._conn
        with self._snapshot(), self._errors():
            rows = conn.execute(
                f"SELECT {_CELL_COLUMNS} FROM cells WHERE {where} ORDER BY id",  # noqa: S608 (constants)
                params,
            ).fetchall()
            if not rows:
                return []
            mine = {row[0] for row in rows}
            by_range = batched and rows[-1][0] - rows[0][0] < 4 * len(rows)
            span = (rows[0][0], rows[-1][0]) if by_range else (encode_json(sorted(mine)),)
            if batched:
                subtests = _subtest_arrays(conn, _SUBTEST_ARRAYS[by_range], span, mine)
            else:
                subtests = _subtest_rows(conn, span)
            evidence = _evidence(conn, _EVIDENCE_ROWS[by_range], span, mine)
            logs = _logs(conn, _LOG_ROWS[by_range], span, mine)
            fingerprint_ids = {row[-1] for row in rows} - {None}
            fingerprints = {fp_id: self.get_fingerprint(fp_id) for fp_id in fingerprint_ids}
        return [
            _cell(
                row,
                fingerprints.get(row[-1], {}),
                subtests.get(row[0], ()),
                tuple(logs.get(row[0], ())),
                tuple(evidence.get(row[0], ())),
            )
            for row in rows
        ]

    # -- host fingerprints and builds ------------------------------------------------------------

    def get_fingerprint(self, fingerprint_id: int) -> dict[str, str]:
        rows = self._read("SELECT data FROM fingerprints WHERE id = ?", (fingerprint_id,))
        if not rows:
            raise UserError(f"no host fingerprint {fingerprint_id} in {self.path}")
        data: dict[str, str] = json.loads(rows[0]["data"])
        return data

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

    def build_seconds(self) -> dict[str, float]:
        """How long each build took when it was built (its meta's duration_s, kept when later
        runs find it in the cache), by build key (the results browser's trends)."""
        rows = self._read(_BUILD_SECONDS[self.dialect.name])
        return {row[0]: float(row[1]) for row in rows}

    # -- bisections ------------------------------------------------------------------------------

    def get_bisection(self, bisection_id: int) -> BisectionRecord | None:
        rows = self._read("SELECT * FROM bisections WHERE id = ?", (bisection_id,))
        return _bisection(rows[0]) if rows else None

    def bisections(self, limit: int | None = None) -> list[BisectionRecord]:
        rows = self._read(*_limited("SELECT * FROM bisections ORDER BY id DESC", (), limit))
        return [_bisection(row) for row in rows]

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

    def changes(self, run_id: int) -> list[ChangeRecord]:
        with self._errors():
            rows = self._conn.execute(
                f"SELECT {_CHANGE_COLUMNS} FROM changes WHERE run_id = ? "  # noqa: S608 (constants)
                "ORDER BY tree, rev, variant, profile, host, job, subtest",
                (run_id,),
            ).fetchall()
        return [ChangeRecord(SubtestKey(*row[:7]), _CHANGES[row[7]], *row[8:]) for row in rows]

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
                        key,
                        _CHANGES[change],
                        passes,
                        fails,
                        errors,
                        base_run,
                        base_status,
                        pass_run,
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
        where, params = _conditions(status=status)
        rows = self._read(f"SELECT * FROM regressions{where} ORDER BY id", params)  # noqa: S608
        return [_regression(r) for r in rows]

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


# -- cells' children, a dictionary by cell id each -----------------------------------------------


def _subtest_rows(conn: Database, ids: Span) -> dict[int, tuple[SubtestRecord, ...]]:
    """The subtests of the cells in a JSON array of ids, read a row a subtest."""
    out: dict[int, list[SubtestRecord]] = {}
    for cell_id, name, status, errno, detail, signal, timed_out in conn.execute(
        _SUBTEST_ROWS[False], ids
    ):
        out.setdefault(cell_id, []).append(
            SubtestRecord(name, ResultStatus(status), errno, detail, signal, bool(timed_out))
        )
    return {cell_id: tuple(records) for cell_id, records in out.items()}


def _subtest_arrays(
    conn: Database, sql: str, span: Span, mine: set[int]
) -> dict[int, tuple[SubtestRecord, ...]]:
    """The subtests of the cells in ``mine``, read a JSON array a cell."""
    out: dict[int, tuple[SubtestRecord, ...]] = {}
    # immutable, and most cells of a line have the same ones run after run: cells with the
    # same array share one tuple of records
    same: dict[str, tuple[SubtestRecord, ...]] = {}
    for cell_id, array in conn.execute(sql, span):
        if cell_id in mine:
            found = same.get(array)
            if found is None:
                found = _subtests_of(array)
                if found is None:  # not as the store writes them: read as rows
                    found = _subtest_rows(conn, (encode_json([cell_id]),))[cell_id]
                else:
                    same[array] = found
            out[cell_id] = found
    return out


def _subtests_of(array: str) -> tuple[SubtestRecord, ...] | None:
    """A cell's subtests from its _SUBTEST_ARRAYS array, in their order; None when a number in
    it is not an integer (JSON shows a real with 15 digits: those are read as rows)."""
    items = json.loads(array)
    items.sort(key=_first)  # SQLite adds the rows in the index's order; made sure of
    for item in items:
        if type(item[3]) is not int or not (item[5] is None or type(item[5]) is int):
            return None
    return tuple(
        SubtestRecord(name, _STATUSES[status], errno, detail, signal, bool(timed_out))
        for _, name, status, errno, detail, signal, timed_out in items
    )


def _evidence(conn: Database, sql: str, span: Span, mine: set[int]) -> dict[int, list[Evidence]]:
    out: dict[int, list[Evidence]] = {}
    for cell_id, signature, source, line, lines, also, strong, more in conn.execute(sql, span):
        if cell_id in mine:
            out.setdefault(cell_id, []).append(
                Evidence(
                    signature,
                    _KINDS[source],
                    line,
                    tuple(json.loads(lines)),
                    tuple(json.loads(also)),
                    bool(strong),
                    more,
                )
            )
    return out


def _logs(conn: Database, sql: str, span: Span, mine: set[int]) -> dict[int, list[LogRef]]:
    out: dict[int, list[LogRef]] = {}
    refs: dict[tuple[str, str], LogRef] = {}
    for cell_id, kind, path in conn.execute(sql, span):
        if cell_id in mine:
            ref = refs.get((kind, path))
            if ref is None:  # immutable: cells that share a log (a build's) share it
                ref = refs[(kind, path)] = LogRef(_KINDS[kind], path)
            out.setdefault(cell_id, []).append(ref)
    return out


# -- records from rows ---------------------------------------------------------------------------


def _cell(
    row: Sequence[Any],
    fingerprint: dict[str, str],
    subtests: tuple[SubtestRecord, ...],
    logs: tuple[LogRef, ...],
    evidence: tuple[Evidence, ...],
) -> CellRecord:
    """A cell from its row (_CELL_COLUMNS) and its children."""
    cell_id, run_id, tree, rev, variant, profile, host, job, repeat, status, reason = row[:11]
    commit, patch, build, started, finished, boot_seconds = row[11:17]
    return CellRecord(
        tree=tree,
        rev=rev,
        variant=variant,
        profile=profile,
        host=host,
        job=job,
        repeat=repeat,
        status=_STATUSES[status],
        reason=reason,
        commit=commit,
        patch_hash=patch,
        build_key=build,
        started=decode_time(started),
        finished=decode_time(finished),
        fingerprint=dict(fingerprint),
        subtests=subtests,
        logs=logs,
        evidence=evidence,
        boot_seconds=boot_seconds,
        id=cell_id,
        run_id=run_id,
    )


def _conditions(**equal: str | None) -> tuple[str, tuple[Any, ...]]:
    """A WHERE clause for the columns given a value (None: any value), and its parameters."""
    given = {column: value for column, value in equal.items() if value is not None}
    if not given:
        return "", ()
    return " WHERE " + " AND ".join(f"{column} = ?" for column in given), tuple(given.values())


def _limited(sql: str, params: tuple[Any, ...], limit: int | None) -> tuple[str, tuple[Any, ...]]:
    """``sql`` with a LIMIT when there is one (none is spelled differently in each dialect)."""
    return (sql, params) if limit is None else (sql + " LIMIT ?", (*params, limit))


def _first(item: Sequence[Any]) -> Any:
    return item[0]


def _two(item: Sequence[Any]) -> Any:
    return item[:2]


def _regression(r: Any) -> RegressionRecord:
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


def _bisection(row: Any) -> BisectionRecord:
    return BisectionRecord(
        id=row["id"],
        created=decode_time(row["created"]) or datetime.now(UTC),
        updated=decode_time(row["updated"]) or datetime.now(UTC),
        status=row["status"],
        request=json.loads(row["request"]),
        report=None if row["report"] is None else json.loads(row["report"]),
    )


def _run(row: Any) -> RunRecord:
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
