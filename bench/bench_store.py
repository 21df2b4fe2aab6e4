"""The shared store against the SQLite file: store operations per second, a nightly's store work
on each backend, and how long a host stays lost when its controller is killed.

    python3 bench/bench_store.py [--cells 200] [--nightlies 3] [--handovers 3] [--timeouts 3,9]

Needs PostgreSQL 15's binaries (`apt-get install postgresql-15`, or `./bootstrap --test`): it
starts a throwaway server like the tests do (tests/pgserver.py: initdb and pg_ctl in a temporary
directory, a Unix socket, fsync off as in the tests, so the figures are the protocol's and
kbisect's, not a disk's). Needs no kbisect cache and no root beyond what pgserver needs (as
root, it runs the server as an unprivileged user). About a minute and a half on 2 cores.

1. Operations per second on each backend, one controller: recording a cell (15 subtests, 3 log
   references, a fingerprint: one transaction), looking a cell up by its identity (what a
   nightly worker does before and under each lease), reading a run's cells back, and taking and
   releasing a host lease (a flock on this machine for SQLite's set-up; a row for the shared
   store).
2. A nightly's store work on each backend: the shipped nightly's matrix (2 releases x 4 variants
   x 3 repeats = 24 cells) as NightlyRun does it (the planned cells in the run, per build the
   identity look-ups of the builder and the worker and one build record, each cell recorded,
   then classification, the JUnit files and the summary), against the wall time of a real
   nightly of that size (about 15 minutes on the embedded host, bench_nightly.py).
3. Lease hand-over: a controller (a child process) takes a host's lease in the shared store and
   is killed with SIGKILL; this process, waiting for the host, measures from the kill until it
   holds the lease, for each lease timeout asked. The holder heartbeats every third of the
   timeout, so the hand-over lies between two thirds of the timeout and the timeout (plus the
   0.2 s poll of a waiter).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from kbisect.deadline import Deadline  # noqa: E402
from kbisect.lab.lease import FileLeases  # noqa: E402
from kbisect.lab.store_lease import LeaseBook, StoreLeases  # noqa: E402
from kbisect.pipeline import outputs  # noqa: E402
from kbisect.pipeline.nightly import PlannedCell, cells_to_json  # noqa: E402
from kbisect.pipeline.regressions import classify_run  # noqa: E402
from kbisect.results.model import (  # noqa: E402
    BuildRecord,
    CellIdentity,
    CellRecord,
    LogKind,
    LogRef,
    ResultStatus,
    RunStatus,
    SubtestRecord,
)
from kbisect.results.store import ResultsStore  # noqa: E402
from pgserver import start_server  # noqa: E402

T0 = datetime(2026, 1, 1, tzinfo=UTC)
FINGERPRINT = {"xen_version": "4.17.7", "dom0_release": "6.1.192+", "numa_nodes": "2"}
VARIANTS = tuple(f"gntdev-numa/{v}" for v in ("vm-mixedmap", "vm-io", "none", "mempolicy"))


def build_key(rev: str, variant: str) -> str:
    return hashlib.sha256(f"{rev} {variant}".encode()).hexdigest()[:24]


def cell(rev: str, variant: str, repeat: int, n: int) -> CellRecord:
    subtests = tuple(
        SubtestRecord(f"subtest{i:02d}", ResultStatus.PASS, detail="ok") for i in range(15)
    )
    logs = tuple(
        LogRef(kind, f"runs/1/{rev}/{n}/{kind.value}.txt")
        for kind in (LogKind.JOB_OUTPUT, LogKind.DMESG, LogKind.CONSOLE)
    )
    return CellRecord(
        tree="debian-6.1", rev=rev, variant=variant, profile="xen-dom0", host="qemu",
        job="gntstress", repeat=repeat, status=ResultStatus.PASS, reason="",
        commit="0" * 40, build_key=build_key(rev, variant),
        started=T0 + timedelta(minutes=n), finished=T0 + timedelta(minutes=n, seconds=40),
        fingerprint=FINGERPRINT, subtests=subtests, logs=logs,
    )  # fmt: skip


def rate(count: int, action: Callable[[int], object]) -> float:
    started = time.perf_counter()
    for i in range(count):
        action(i)
    return count / (time.perf_counter() - started)


def operations(store: ResultsStore, leases: LeaseBook, count: int) -> dict[str, float]:
    run = store.start_run("nightly", pipeline="bench")
    cells = [cell(f"v{i // 12}", VARIANTS[i % 4], i % 3 + 1, i) for i in range(count)]
    figures = {"record a cell": rate(count, lambda i: store.record_cell(run.id, cells[i]))}
    figures["find a cell"] = rate(
        count, lambda i: store.find_cell(run.id, CellIdentity(*cells[i].identity))
    )
    figures["read a run's cells (per cell)"] = count * rate(5, lambda _: store.cells(run.id))

    def lease(_: int) -> None:
        leases.acquire("bench-host", "bench", Deadline(10)).release()

    figures["take and release a lease"] = rate(max(count // 4, 20), lease)
    return figures


def nightly_work(store: ResultsStore) -> float:
    """Seconds of a nightly's store work for the shipped matrix (24 cells, 8 builds)."""
    started = time.perf_counter()
    planned = [(f"v{r}", v, k) for r in range(2) for v in VARIANTS for k in (1, 2, 3)]
    matrix = [PlannedCell("debian-6.1", r, v, "xen-dom0", "qemu", "gntstress", k)
              for r, v, k in planned]  # fmt: skip
    meta = {"cells": cells_to_json(matrix)}
    run = store.start_run("nightly", pipeline="bench", meta=meta)
    for unit in range(8):
        mine = [(n, p) for n, p in enumerate(planned) if n // 3 == unit]
        for _ in range(3):  # the builder, the worker before the lease, the worker under it
            for n, (rev, variant, repeat) in mine:
                store.find_cell(run.id, CellIdentity(*cell(rev, variant, repeat, n).identity))
        rev, variant, _ = mine[0][1]
        store.record_build(BuildRecord(build_key(rev, variant), "ok", None, (), {}))
        for n, (rev, variant, repeat) in mine:
            store.record_cell(run.id, cell(rev, variant, repeat, n))
    store.claim_finish(run.id)
    changes = classify_run(store, run.id)
    outputs.write_junit(store, run.id)
    outputs.summary(store, run.id, changes, {})
    store.finish_run(run.id, RunStatus.FINISHED)
    return time.perf_counter() - started


_HOLDER = """import sys, time
from kbisect.deadline import Deadline
from kbisect.lab.store_lease import StoreLeases
lease = StoreLeases(sys.argv[1], float(sys.argv[2])).acquire("handover", "bench", Deadline(30))
print("held", flush=True)
time.sleep(3600)
"""


def handover(url: str, timeout: float) -> float:
    """Seconds from SIGKILL of the holder until a waiting controller holds the host."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, url, str(timeout)], env=env, text=True,
        stdout=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        time.sleep(timeout * 0.4)  # somewhere between two heartbeats
        os.kill(holder.pid, signal.SIGKILL)
        killed = time.monotonic()
        lease = StoreLeases(url, timeout).acquire("handover", "bench", Deadline(timeout * 3))
        took = time.monotonic() - killed
        lease.release()
        return took
    finally:
        if holder.poll() is None:
            os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=200, help="cells recorded per backend")
    parser.add_argument("--nightlies", type=int, default=3, help="nightly store runs per backend")
    parser.add_argument("--handovers", type=int, default=3, help="kills per lease timeout")
    parser.add_argument("--timeouts", default="3,9", help="lease timeouts to measure (seconds)")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    server = start_server()
    work = Path(tempfile.mkdtemp(prefix="bench-store-"))
    try:
        backends = {
            "SQLite": (None, FileLeases(work / "leases")),
            "PostgreSQL": (server.fresh_schema(), StoreLeases(server.fresh_schema(), 60)),
        }
        table: dict[str, dict[str, float]] = {}
        nightly: dict[str, list[float]] = {}
        for name, (url, leases) in backends.items():
            with ResultsStore(work / name / "ops", url=url) as store:
                table[name] = operations(store, leases, args.cells)
            url2 = None if url is None else server.fresh_schema()
            with ResultsStore(work / name / "nightly", url=url2) as store:
                nightly[name] = [nightly_work(store) for _ in range(args.nightlies)]
        print("\n1. store operations per second (one controller)")
        print(f"  {'operation':32} {'SQLite':>10} {'PostgreSQL':>11}")
        for op in table["SQLite"]:
            print(f"  {op:32} {table['SQLite'][op]:10.0f} {table['PostgreSQL'][op]:11.0f}")
        print("\n2. a nightly's store work (24 cells, 8 builds; per nightly, median of "
              f"{args.nightlies}; the nightly itself takes about 15 min)")  # fmt: skip
        for name, seconds in nightly.items():
            median = statistics.median(seconds)
            print(f"  {name:11} {median:6.2f} s  ({median / 900:.3%} of 15 min)")
        print("\n3. lease hand-over after a killed controller (shared store)")
        for timeout in (float(t) for t in args.timeouts.split(",")):
            took = [handover(backends["PostgreSQL"][0] or "", timeout)
                    for _ in range(args.handovers)]  # fmt: skip
            print(f"  timeout {timeout:4g} s: {min(took):5.2f} / {statistics.median(took):5.2f} "
                  f"/ {max(took):5.2f} s (min / median / max of {len(took)}; expected "
                  f"{timeout * 2 / 3:.1f}-{timeout + 0.2:.1f} s)")  # fmt: skip
    finally:
        server.stop()


if __name__ == "__main__":
    main()
