"""The results store: round trips, atomic cells (also under SIGKILL), concurrent writers, WAL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath

import pytest

from kbisect.deadline import Deadline
from kbisect.errors import InfraError, UserError
from kbisect.results import (
    BuildRecord,
    CellRecord,
    Evidence,
    LogKind,
    LogRef,
    ResultsStore,
    ResultStatus,
    RunStatus,
    SubtestRecord,
    schema,
)
from kbisect.results.connection import NUL_STAND_IN, PgConnection
from kbisect.results.model import Change, ChangeRecord, SubtestKey, check_relative
from pgserver import PostgresServer

T0 = datetime(2025, 6, 10, 9, 0, 0, 123456, tzinfo=UTC)
FP = {
    "kernel": "6.1.0-kbisect #1",
    "xen": "4.17.3-pre",
    "cpu": "QEMU Virtual CPU 2.5+",
    "numa": "2",
}


def make_cell(host: str = "qemu-xen", repeat: int = 0, **changes: object) -> CellRecord:
    cell = CellRecord(
        tree="debian-6.1",
        rev="v6.1.192-2",
        variant="gntdev-numa/none",
        profile="dom0-min",
        host=host,
        job="gntstress",
        repeat=repeat,
        status=ResultStatus.FAIL,
        reason="numa-soak FAIL errno=0: killed by signal 7 (SIGBUS)",
        commit="0123456789abcdef0123456789abcdef01234567",
        patch_hash="9f86d081884c7d65",
        build_key="a1b2c3d4e5f6a7b8c9d0e1f2",
        started=T0,
        finished=T0 + timedelta(seconds=42),
        fingerprint=dict(FP),
        subtests=(
            SubtestRecord("self-map", ResultStatus.PASS, 0, "both directions OK"),
            SubtestRecord(
                "numa-soak", ResultStatus.FAIL, 0, "killed by signal 7 (SIGBUS)", signal=7
            ),
            SubtestRecord("churn", ResultStatus.FAIL, 0, "timeout after 60s", timed_out=True),
            SubtestRecord("fork", ResultStatus.MISS, 0, "never ran"),
        ),
        logs=(
            LogRef(LogKind.JOB_OUTPUT, "run-1/cell-1/job-output.txt"),
            LogRef(LogKind.DMESG, "run-1/cell-1/dmesg.txt"),
            LogRef(LogKind.CONSOLE, "run-1/cell-1/console.txt"),
        ),
        evidence=(
            Evidence(
                "bad-page-map",
                LogKind.DMESG,
                33,
                ("[   14.220871] BUG: Bad page map in process gntstress", "[   14.2] Call Trace:"),
                also=("call-trace",),
            ),
            Evidence("warning", LogKind.CONSOLE, 7, ("[ 1.0] WARNING: x",), strong=False, more=2),
        ),
    )
    return replace(cell, **changes)


@pytest.fixture
def store(tmp_path: Path, store_backend: str | None):
    """A store on each backend: the SQLite file, and a real PostgreSQL database."""
    with ResultsStore(tmp_path / "results", url=store_backend) as s:
        yield s


def _count(store: ResultsStore, sql: str) -> int:
    """One number read from the store's own database, whichever it is."""
    return int(store._read(sql)[0][0])


def test_creates_the_directory_in_wal_mode(tmp_path: Path) -> None:
    where = tmp_path / "deep" / "results"
    with ResultsStore(where) as s:
        assert s.path == where / "kbisect.sqlite" and s.path.is_file()
    conn = sqlite3.connect(where / "kbisect.sqlite")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        version = conn.execute("SELECT version FROM schema_version").fetchone()[0]
        assert version == schema.SCHEMA_VERSION
    finally:
        conn.close()


def test_round_trip_of_everything(store: ResultsStore) -> None:
    run = store.start_run("nightly", pipeline="nightly", meta={"by": "cron", "n": 3}, started=T0)
    assert (run.kind, run.pipeline, run.status, run.meta) == (
        "nightly",
        "nightly",
        RunStatus.RUNNING,
        {"by": "cron", "n": 3},
    )
    assert run.started == T0 and run.finished is None
    cell = make_cell()
    cell_id = store.record_cell(run.id, cell)
    back = store.get_cell(cell_id)
    assert back == replace(cell, id=cell_id, run_id=run.id)
    assert store.cells(run.id) == [back]
    assert store.find_cell(run.id, cell.identity) == back
    assert store.find_cell(run.id, replace(cell, repeat=1).identity) is None
    done = store.finish_run(run.id, finished=T0 + timedelta(hours=1))
    assert done.status is RunStatus.FINISHED and done.finished == T0 + timedelta(hours=1)
    assert store.log_path(cell.logs[0]) == store.results_dir / "run-1/cell-1/job-output.txt"


def test_minimal_cell_round_trip(store: ResultsStore) -> None:
    run = store.start_run("run")
    cell = CellRecord("t", "r", "", "p", "h", "j", 0, ResultStatus.ERROR, "host died")
    back = store.get_cell(store.record_cell(run.id, cell))
    assert back is not None and replace(back, id=None, run_id=None) == cell


def test_builds_and_fingerprints(store: ResultsStore) -> None:
    build = BuildRecord(
        key="a1b2c3d4e5f6a7b8c9d0e1f2",
        status="failed",
        log="builds/a1b2c3d4e5f6a7b8c9d0e1f2/build.log",
        errors=("drivers/xen/gntdev.c:1033: error: 'VM_MIXEDMAP' undeclared",),
        meta={"tree": "debian-6.1", "revision": "v6.1.192-2", "duration_s": 265.2},
        recorded=T0,
    )
    store.record_build(build)
    assert store.get_build(build.key) == build
    store.record_build(replace(build, status="built", errors=(), recorded=T0 + timedelta(1)))
    again = store.get_build(build.key)
    assert again is not None and again.status == "built" and again.errors == ()
    assert store.get_build("ffffffffffffffffffffffff") is None
    first = store.record_fingerprint(FP)
    assert store.record_fingerprint(dict(reversed(FP.items()))) == first  # by content
    assert store.record_fingerprint({**FP, "xen": "4.18"}) != first
    assert store.get_fingerprint(first) == FP
    run = store.start_run("run")
    store.record_cell(run.id, make_cell("a"))
    store.record_cell(run.id, make_cell("b"))
    count = _count(store, "SELECT count(*) FROM fingerprints")
    assert count == 2  # the two cells share the first fingerprint


def test_runs_newest_first_and_unfinished_ones_can_be_found(store: ResultsStore) -> None:
    a = store.start_run("run", started=T0)
    b = store.start_run("bisect", started=T0 + timedelta(minutes=5))
    c = store.start_run("nightly", started=T0 + timedelta(minutes=10))
    store.finish_run(c.id, RunStatus.ABORTED)
    assert [r.id for r in store.runs()] == [c.id, b.id, a.id]
    assert [r.id for r in store.runs(status=RunStatus.RUNNING)] == [b.id, a.id]
    assert [r.id for r in store.runs(kind="bisect")] == [b.id]
    assert [r.id for r in store.runs(limit=1)] == [c.id]
    assert store.get_run(c.id) is not None and store.get_run(c.id + 100) is None


def test_a_run_left_running_by_a_dead_process_is_found_by_the_next(
    tmp_path: Path, store_backend: str | None
) -> None:
    with ResultsStore(tmp_path) as first:
        run = first.start_run("nightly")
        first.record_cell(run.id, make_cell())
    with ResultsStore(tmp_path) as second:
        (unfinished,) = second.runs(status=RunStatus.RUNNING)
        assert unfinished.id == run.id and len(second.cells(run.id)) == 1


def test_recording_the_same_identity_again_replaces_it(store: ResultsStore) -> None:
    run = store.start_run("run")
    store.record_cell(run.id, make_cell(repeat=0))
    store.record_cell(run.id, make_cell(repeat=1))
    redone = make_cell(repeat=0, status=ResultStatus.PASS, reason="13 subtests: 13 PASS")
    redone = replace(redone, subtests=redone.subtests[:1], evidence=(), logs=redone.logs[:1])
    new_id = store.record_cell(run.id, redone)
    cells = store.cells(run.id)
    assert [(c.repeat, c.status) for c in cells] == [(1, ResultStatus.FAIL), (0, ResultStatus.PASS)]
    assert cells[1] == replace(redone, id=new_id, run_id=run.id)
    for table in ("subtests", "evidence", "logs"):
        orphans = _count(
            store, f"SELECT count(*) FROM {table} WHERE cell_id NOT IN (SELECT id FROM cells)"
        )
        assert orphans == 0, table
    other = store.start_run("run")
    store.record_cell(other.id, make_cell(repeat=0))  # same identity, other run: a new cell
    assert len(store.cells(run.id)) == 2 and len(store.cells(other.id)) == 1


def test_an_exception_after_the_cell_row_leaves_nothing(
    store: ResultsStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = store.start_run("run")
    store.record_cell(run.id, make_cell(repeat=0))
    before = store.cells(run.id)
    inserted: list[int] = []

    def explode(self: ResultsStore, conn: sqlite3.Connection, cell_id: int, cell: CellRecord):
        inserted.append(cell_id)
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(ResultsStore, "_insert_children", explode)
    with pytest.raises(RuntimeError, match="disk on fire"):
        store.record_cell(run.id, make_cell(repeat=0, status=ResultStatus.PASS))  # a replace
    with pytest.raises(RuntimeError):
        store.record_cell(run.id, make_cell(repeat=5))  # a new one
    assert len(inserted) == 2
    assert store.cells(run.id) == before  # the old cell survives its failed replacement
    assert store.get_cell(inserted[1]) is None


def test_a_cell_keeps_its_boot_time_and_older_stores_gain_the_column(
    tmp_path: Path, store_backend: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a store as kbisect made it before cells kept their boot time, with a cell in it
    boot_column = schema.SCHEMA_VERSION - 1
    assert "boot_seconds" in str(schema.MIGRATIONS[boot_column])
    with monkeypatch.context() as older:
        older.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:boot_column])
        older.setattr(schema, "SCHEMA_VERSION", boot_column)
        with ResultsStore(tmp_path, url=store_backend) as old:
            run = old.start_run("nightly")
            with old._write() as conn:
                conn.execute(
                    "INSERT INTO cells (run_id, tree, rev, variant, profile, host, job, repeat, "
                    "status, reason) VALUES (?, 't', 'r', '', 'p', 'h', 'j', 1, 'PASS', '')",
                    (run.id,),
                )
            assert _count(old, "SELECT version FROM schema_version") == boot_column
    with ResultsStore(tmp_path, url=store_backend) as store:
        assert _count(store, "SELECT version FROM schema_version") == schema.SCHEMA_VERSION
        (old_cell,) = store.cells(run.id)
        assert old_cell.boot_seconds is None  # not known: no value, never a zero
        booted = make_cell(repeat=2, boot_seconds=41.7)
        cell_id = store.record_cell(run.id, booted)
        assert store.get_cell(cell_id) == replace(booted, id=cell_id, run_id=run.id)
        assert store.cells_of_runs([run.id])[run.id][1].boot_seconds == 41.7


def test_runs_read_together_keep_odd_subtests_as_they_were(store: ResultsStore) -> None:
    """cells_of_runs reads a cell's subtests as one JSON array: names and details of any text,
    signals, time-outs, big numbers and the order come back as ``cells`` reads them; a number
    that is no integer (not what the store writes) is read as rows, not through JSON."""
    odd = (
        SubtestRecord("nul\0name", ResultStatus.FAIL, 2**62, "a\0b \x1b[31m \u2028 \U0001f600"),
        SubtestRecord("", ResultStatus.SKIP, -1, '"\\/<&>', signal=9, timed_out=True),
        SubtestRecord("long", ResultStatus.ERROR, 0, "x" * 70_000),
        *(SubtestRecord(f"s{i}", ResultStatus.PASS, 0, "ok") for i in range(12)),
    )
    runs = [store.start_run("run").id for _ in range(3)]
    for i, run_id in enumerate(runs):
        store.record_cell(run_id, make_cell(subtests=odd))  # shared by equal arrays
        store.record_cell(run_id, make_cell(repeat=1, subtests=odd[::-1]))
        store.record_cell(run_id, make_cell(repeat=2, subtests=()))
        store.record_cell(run_id, make_cell(repeat=3, subtests=odd[i:]))
    real = make_cell(repeat=4, subtests=(SubtestRecord("r", ResultStatus.PASS, 1.5, "ok"),))  # type: ignore[arg-type]
    store.record_cell(runs[1], real)
    together = store.cells_of_runs(runs)
    for run_id in runs:
        assert together[run_id] == store.cells(run_id)
    # SQLite keeps the real it was given; PostgreSQL's integer column rounds it, and its text
    # cannot hold NUL (the store writes U+FFFD for it there)
    assert together[runs[1]][-1].subtests[0].errno == (1.5 if store.url is None else 2)
    names = [s.name for s in odd[::-1]]
    if store.url is not None:
        names = [name.replace("\0", NUL_STAND_IN) for name in names]
    assert [s.name for s in together[runs[0]][1].subtests] == names


def test_changes_read_together_come_in_order_as_they_were(store: ResultsStore) -> None:
    """changes_of_runs reads a cell line's changes as one JSON array: they come back in
    ``changes``'s order (names beyond ASCII, NULs, prefixes) and with the same values; a number
    that is no integer (not what the store writes) has them all read as rows."""
    names = ["b", "a", "a\0", "\u00e9", "\U0001f600", "ab", "A", "", "zz" * 50]
    lines = [
        ("t", "v1", "x", "p", "h", "j"),
        ("t", "v1", "", "p", "h", "j"),
        ("\u00e9", "a", "", "", "", ""),
    ]
    runs = [store.start_run("run").id for _ in range(3)]
    for n, run_id in enumerate(runs):
        store.record_changes(
            run_id,
            [
                ChangeRecord(
                    SubtestKey(*line, name),
                    "FLAKY" if i % 2 else "PASS",
                    i,
                    n,
                    2**40,
                    None if i % 3 else n,
                    None if i % 2 else "FAIL",
                    i or None,
                )
                for i, name in enumerate(names)
                for line in lines[n % 2 :]
            ],
        )
    together = store.changes_of_runs(runs)
    for run_id in runs:
        assert together[run_id] == store.changes(run_id) and together[run_id]
        read = [*together[run_id], *store.changes(run_id)]
        assert {type(c.change) for c in read} == {Change}, "a class, not a bare string"
    key = SubtestKey("t", "v1", "x", "p", "h", "j", "z")
    store.record_changes(runs[2], [ChangeRecord(key, "PASS", 1, 0, 0, 2.5)])  # type: ignore[arg-type]
    together = store.changes_of_runs(runs)
    for run_id in runs:
        assert together[run_id] == store.changes(run_id)
    assert together[runs[2]][0].baseline_run == (2.5 if store.url is None else 2)


LOG_PATHS = [
    "run-1/cell-1/dmesg.txt",
    "a",
    ".",
    "./a",
    "a/./b",
    "a//b",
    "a/",
    ".hidden/x",
    "a/..b",
    "a/b..",
    "...",
    "a/.../b",
    "..a/b",
    "",
    "/",
    "/etc/passwd",
    "//x",
    "..",
    "../x",
    "a/..",
    "a/../b",
    "a//../b",
    "a/./../b",
    "a\\b",
    "a/b\\",
    "a\0b",
    "\0",
]


def _reference_check(path: str) -> bool:
    """check_relative's checks as they were made with a path object."""
    pure = PurePosixPath(path)
    return not (
        not path or pure.is_absolute() or ".." in pure.parts or "\\" in path or "\0" in path
    )


@pytest.mark.parametrize("path", LOG_PATHS)
def test_log_paths_are_checked_as_a_path_object_would(path: str) -> None:
    """The string tests of check_relative refuse exactly what PurePosixPath's did."""
    if _reference_check(path):
        assert check_relative(path) == path
        assert LogRef(LogKind.DMESG, path).path == path
        assert BuildRecord(key="0123abcd", status="built", log=path).log == path
    else:
        with pytest.raises(ValueError, match="relative to the results directory"):
            check_relative(path)
        with pytest.raises(ValueError, match="relative to the results directory"):
            LogRef(LogKind.DMESG, path)
        with pytest.raises(ValueError, match="relative to the results directory"):
            BuildRecord(key="0123abcd", status="built", log=path)


def test_bad_input_is_refused_before_anything_is_written(store: ResultsStore) -> None:
    run = store.start_run("run")
    with pytest.raises(UserError, match="no run 999"):
        store.record_cell(999, make_cell())
    with pytest.raises(ValueError, match="naive datetime"):
        store.record_cell(run.id, make_cell(started=datetime(2025, 1, 1)))
    with pytest.raises(ValueError, match="fingerprint entries are strings"):
        store.record_cell(run.id, make_cell(fingerprint={"cpus": 2}))
    with pytest.raises(ValueError, match="relative to the results directory"):
        LogRef(LogKind.DMESG, "/etc/passwd")
    with pytest.raises(ValueError, match="relative to the results directory"):
        LogRef(LogKind.DMESG, "run-1/../../x")
    with pytest.raises(ValueError, match="not a build key"):
        BuildRecord(key="../x", status="built")
    with pytest.raises(UserError, match="no run 999"):
        store.finish_run(999)
    assert store.cells(run.id) == []


def test_a_store_locked_past_the_busy_timeout_is_an_infra_error(tmp_path: Path) -> None:
    with ResultsStore(tmp_path, busy_timeout=0.2) as s:
        run = s.start_run("run")
        holder = sqlite3.connect(s.path, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            with pytest.raises(InfraError, match="database is locked"):
                s.record_cell(run.id, make_cell())
            holder.execute("ROLLBACK")
        finally:
            holder.close()
        s.record_cell(run.id, make_cell())
        assert len(s.cells(run.id)) == 1


def test_not_a_database_is_an_infra_error(tmp_path: Path) -> None:
    (tmp_path / "kbisect.sqlite").write_bytes(b"this is not SQLite\n" * 100)
    with pytest.raises(InfraError, match="not a database"):
        ResultsStore(tmp_path)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    ResultsStore(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "kbisect.sqlite")
    conn.execute("UPDATE schema_version SET version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(UserError, match="schema version 99"):
        ResultsStore(tmp_path)


def test_migrations_run_from_an_empty_file_once(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.sqlite", isolation_level=None)
    assert schema.migrate(conn) == schema.SCHEMA_VERSION
    assert schema.migrate(conn) == schema.SCHEMA_VERSION  # nothing left to do
    conn.close()


# ---------------------------------------------------------------------------------------------
# Other processes
# ---------------------------------------------------------------------------------------------

CHILD_PRELUDE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from test_results_store import make_cell
    from kbisect.results import ResultsStore
    results = Path(sys.argv[1])
    """
).format(tests=str(Path(__file__).resolve().parent))


def _python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD_PRELUDE + textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: Path, proc: subprocess.Popen[str], seconds: float = 30.0) -> None:
    deadline = Deadline(seconds)
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(
                f"child exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}"
            )
        if deadline.expired:
            proc.kill()
            proc.wait()
            pytest.fail(f"{path} did not appear within {seconds} s")
        time.sleep(0.02)


def test_sigkill_in_the_middle_of_a_cell_leaves_no_half_cell(
    tmp_path: Path, store_backend: str | None
) -> None:
    with ResultsStore(tmp_path) as s:
        run = s.start_run("run")
        s.record_cell(run.id, make_cell(repeat=0))
    marker = tmp_path / "inside-transaction"
    child = _python(
        """
        store = ResultsStore(results)
        real = ResultsStore._insert_children
        def stall(self, conn, cell_id, cell):
            real(self, conn, cell_id, cell)  # every row written, the commit not yet
            part = Path(sys.argv[2] + ".part")  # renamed whole: the waiter never reads it empty
            part.write_text(str(cell_id))
            part.rename(sys.argv[2])
            time.sleep(120)
        ResultsStore._insert_children = stall
        store.record_cell(int(sys.argv[3]), make_cell(repeat=0, reason="replaced"))
        """,
        str(tmp_path),
        str(marker),
        str(run.id),
    )
    try:
        _wait_for(marker, child)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.communicate()
    assert child.returncode == -signal.SIGKILL
    half = int(marker.read_text())
    with ResultsStore(tmp_path, busy_timeout=5) as s:
        assert s.get_cell(half) is None
        (cell,) = s.cells(run.id)
        assert cell.reason == make_cell().reason  # the old version, whole
        s.record_cell(run.id, make_cell(repeat=1))  # and the store is writable at once
        assert len(s.cells(run.id)) == 2


def test_two_processes_write_concurrently(tmp_path: Path, store_backend: str | None) -> None:
    with ResultsStore(tmp_path) as s:
        run = s.start_run("run")
    go = tmp_path / "go"
    writer = """
        store = ResultsStore(results)
        while not Path(sys.argv[2]).exists():
            time.sleep(0.005)
        for i in range(40):
            store.record_cell(int(sys.argv[3]), make_cell(host=sys.argv[4], repeat=i))
            if i % 10 == 0:
                store.start_run("run", meta={"writer": sys.argv[4]})
        store.close()
        """
    children = [_python(writer, str(tmp_path), str(go), str(run.id), h) for h in ("a", "b")]
    time.sleep(0.3)  # let both import and open the store
    go.touch()
    for child in children:
        _, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
    with ResultsStore(tmp_path) as s:
        cells = s.cells(run.id)
        assert len(cells) == 80
        assert {(c.host, c.repeat) for c in cells} == {(h, i) for h in "ab" for i in range(40)}
        assert all(len(c.subtests) == 4 and len(c.evidence) == 2 for c in cells)
        assert len(s.runs()) == 1 + 2 * 4


def test_a_lost_server_is_infra_and_bad_sql_is_not(postgres_server: PostgresServer) -> None:
    """PgConnection.infra_error, which the results store and the shared leases share."""
    url = postgres_server.url()
    conn, admin = PgConnection(url, 10), PgConnection(url, 10)
    try:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        with pytest.raises(Exception) as bad_sql:
            conn.execute("SELECT no_such_column FROM no_such_table")
        assert conn.infra_error(bad_sql.value, "store") is None
        admin.execute("SELECT pg_terminate_backend(?)", (pid,))
        with pytest.raises(Exception) as lost:
            conn.execute("SELECT 1")
        infra = conn.infra_error(lost.value, "the leases in X")
        assert isinstance(infra, InfraError)
        assert str(infra).startswith("the leases in X: ") and "\n" not in str(infra)
    finally:
        admin.close()
        conn.close()
