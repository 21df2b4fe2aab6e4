"""Results browser benchmark. Prints figures with their targets; asserts nothing.

python3 bench/bench_browser.py [--runs 1000] [--cells 64] [--subtests 15] [--jobs N]
                               [--dir DIR] [--no-logs] [--keep]

Builds a synthetic results store through the ResultsStore API (--runs nightly runs of --cells
cells with --subtests subtests each: 2 revisions x 4 variants x 2 hosts x 2 jobs x 2 repeats for
64 cells, a new tag every 7 runs, vm-io breaking O_DIRECT from the third tag on, a flaky
numa-soak, boot times on first repeats, classified changes, open regressions, one bisection;
unless --no-logs, a job output and a dmesg file per cell and a 2,400-line build log per build),
then measures:

1. rendering the whole site from scratch, wall and CPU time (target: under 10 s for
   1,000 x 64 x 15), the pages written, the site's size and its largest page; the CPU time is
   this process's and its workers' (printed apart too): when other work takes the cores, the
   wall time stretches while the CPU time stays about what the render costs;
2. rendering again with nothing new (the manifest and the store's signatures are read);
3. rendering after one more run, three times (target: under 1 s);
4. the findings page of the project's gntdev-numa experiment (three of the four variants): the
   first time (it tallies the cells of every run), then after one more run, twice (it reads
   the cells of the new run only), against a render of one more run without it.

The store goes to a temporary directory (on /dev/shm when there is one: 64,000 cells written
with SQLite's synchronous=FULL on a disk would measure the disk) unless --dir says where. The
load average is printed too: other work on the machine slows every figure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kbisect.browser import render_site
from kbisect.config.project import load_project
from kbisect.jobs.gntstress import SUBTESTS
from kbisect.results.model import (
    BuildRecord,
    CellRecord,
    Change,
    ChangeRecord,
    LogKind,
    LogRef,
    ResultStatus,
    RunStatus,
    SubtestKey,
    SubtestRecord,
    TrialRecord,
)
from kbisect.results.store import ResultsStore

REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
VARIANTS = ("gntdev-numa/vm-mixedmap", "gntdev-numa/vm-io", "gntdev-numa/none", "mempolicy")
HOSTS = ("qemu", "rack-1")
JOBS = ("gntstress", "gntstress-long")
NAMES = list(SUBTESTS)  # gntstress's subtests, in its order
FP = {
    "hypervisor": "xen",
    "xen_version": "4.17.7",
    "dom0_release": "6.1.192+",
    "numa_nodes": "2",
    "numa_balancing": "1",
    "cpu": "QEMU Virtual CPU version 2.5+",
    "cpus": "2",
    "memory_mb": "2048",
}


def subtest_names(n: int) -> list[str]:
    return [*NAMES, *(f"extra-{i}" for i in range(len(NAMES), n))][:n]


def tag(n: int) -> str:
    return f"v6.1.{100 + n}-1"


def build_key(rev: str, variant: str) -> str:
    return hashlib.sha256(f"{rev} {variant}".encode()).hexdigest()[:24]


def outcome(run: int, rev: str, variant: str, name: str) -> ResultStatus:
    """vm-io breaks O_DIRECT from the 3rd tag on; none's numa-soak fails one run in three."""
    if variant.endswith("vm-io") and name.startswith("odirect") and rev >= tag(3):
        return ResultStatus.FAIL
    if variant.endswith("none") and name == "numa-soak" and run % 3 == 0:
        return ResultStatus.FAIL
    return ResultStatus.PASS


def boot_seconds(run: int, host: str) -> float:
    """The boot a cell's deploy took (its first repeat's): seconds under QEMU, a minute or two
    on the rack machine."""
    return 4.0 + run % 5 if host == "qemu" else 60.0 + run % 40


def write_log(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def add_run(
    store: ResultsStore, r: int, cells: int, subtests: int, logs: bool, previous: dict
) -> int:
    """Run number r (from 0): cells over two tags (a new one every 7 runs)."""
    newest = r // 7 + 1
    revs = (tag(newest - 1), tag(newest))
    names = subtest_names(subtests)
    run = store.start_run(
        "nightly", pipeline="nightly", meta={"revs": list(revs)}, started=T0 + timedelta(hours=r)
    )
    results = store.results_dir
    changes: list[ChangeRecord] = []
    layout = [
        (rev, variant, host, job, repeat)
        for rev in revs
        for variant in VARIANTS
        for host in HOSTS
        for job in JOBS
        for repeat in (1, 2)
    ]
    counts: dict[SubtestKey, list[int]] = {}
    for i in range(cells):
        rev, variant, host, job, repeat = layout[i % len(layout)]
        if i >= len(layout):
            repeat += 2 * (i // len(layout))
        key = build_key(rev, variant)
        subs = tuple(
            SubtestRecord(
                name,
                status,
                14 if status is ResultStatus.FAIL else 0,
                "read: Bad address" if status is ResultStatus.FAIL else "ok",
            )
            for name in names
            for status in (outcome(r, rev, variant, name),)
        )
        failed = [s for s in subs if s.status is ResultStatus.FAIL]
        refs: tuple[LogRef, ...] = ()
        if logs:
            base = f"runs/{run.id}/debian-6.1/{rev}/{variant.replace('/', '_')}/{host}/{job}"
            base += f"/r{repeat}"
            write_log(
                results / base / "job-output.log",
                [f"GNTSTRESS {s.name} {s.status} errno={s.errno} detail={s.detail}" for s in subs]
                + [f"GNTSTRESS-SUMMARY pass={len(subs) - len(failed)} fail={len(failed)} skip=0"],
            )
            write_log(
                results / base / "dmesg.log",
                [f"[{10 + j}.000000] xen:grant_table: Grant tables using version 1" for j in (1, 2)]
                + [f"[14.{j:06d}] gntdev: mmap {j}" for j in range(4)],
            )
            refs = (
                LogRef(LogKind.JOB_OUTPUT, f"{base}/job-output.log"),
                LogRef(LogKind.DMESG, f"{base}/dmesg.log"),
                LogRef(LogKind.BUILD_LOG, f"builds/{key}.log"),
            )
            build_log = results / "builds" / f"{key}.log"
            if not build_log.exists():
                write_log(build_log, [f"  CC      drivers/xen/file{j}.o" for j in range(2400)])
                meta = {"rev": rev, "duration_s": 240 + len(build_log.name) % 60}
                store.record_build(BuildRecord(key, "built", f"builds/{key}.log", meta=meta))
        store.record_cell(
            run.id,
            CellRecord(
                tree="debian-6.1",
                rev=rev,
                variant=variant,
                profile="xen-dom0",
                host=host,
                job=job,
                repeat=repeat,
                status=ResultStatus.FAIL if failed else ResultStatus.PASS,
                reason=", ".join(f"{s.name} FAIL" for s in failed),
                commit=hashlib.sha1(rev.encode()).hexdigest(),
                build_key=key,
                started=T0 + timedelta(hours=r, minutes=i),
                finished=T0 + timedelta(hours=r, minutes=i, seconds=40),
                fingerprint=FP,
                subtests=subs,
                logs=refs,
                boot_seconds=boot_seconds(r, host) if repeat == 1 else None,
            ),
        )
        for s in subs:
            k = SubtestKey("debian-6.1", rev, variant, "xen-dom0", host, job, s.name)
            c = counts.setdefault(k, [0, 0])
            c[0 if s.status is ResultStatus.PASS else 1] += 1
    for k, (passes, fails) in sorted(counts.items()):
        before = previous.get(k.line)
        if passes and fails:
            change = Change.FLAKY
        elif before is None:
            change = Change.NEW
        elif fails and before == "PASS":
            change = Change.REGRESSION
        elif fails:
            change = Change.STILL_FAILING
        elif before != "PASS":
            change = Change.FIXED
        else:
            change = Change.PASS
        changes.append(
            ChangeRecord(k, change.value, passes, fails, 0, run.id - 1 if before else None)
        )
        if change is Change.REGRESSION:
            store.open_regression(k.line, run.id, k.rev, previous.get(("rev", *k.line)))
        previous[k.line] = "FAIL" if fails and not passes else "PASS" if not fails else "FLAKY"
        previous[("rev", *k.line)] = k.rev
    store.record_changes(run.id, changes)
    store.finish_run(run.id, RunStatus.FINISHED, finished=T0 + timedelta(hours=r, minutes=59))
    return run.id


def add_bisection(store: ResultsStore) -> None:
    record = store.create_bisection({"tree": "debian-6.1", "good": [tag(2)], "bad": tag(3)})
    for seq, (commit, result) in enumerate([("a" * 40, "pass"), ("b" * 40, "fail")]):
        store.add_trial(record.id, TrialRecord(seq, "step", commit, result, "odirect-read"))
    steps = [
        {
            "commit": "b" * 40,
            "phase": "step",
            "verdict": "bad",
            "passes": 0,
            "fails": 1,
            "skips": 0,
            "errors": 0,
            "confidence": 0.999,
            "runs": 1,
            "detail": "",
        }
    ]
    store.finish_bisection(
        record.id,
        "confirmed",
        {
            "status": "confirmed",
            "message": "found",
            "culprit": {"commit": "b" * 40},
            "steps": steps,
        },
    )


def make_store(
    path: Path, runs: int, cells: int, subtests: int, logs: bool
) -> tuple[ResultsStore, dict]:
    """The store, and the state add_run needs to add one more run."""
    store = ResultsStore(path)
    previous: dict = {}
    for r in range(runs):
        add_run(store, r, cells, subtests, logs, previous)
    add_bisection(store)
    return store, previous


def cpu_split() -> tuple[float, float]:
    """CPU time (user + system) of this process, and of its finished children (the render's
    worker processes)."""
    me, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime, children.ru_utime + children.ru_stime


def size_of(site: Path) -> tuple[int, int]:
    files = [p for p in site.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def measure_findings(
    store: ResultsStore,
    site: Path,
    jobs: int,
    args: argparse.Namespace,
    previous: dict,
    one_run: float,
) -> None:
    """The findings page: alone (nothing else new), then with one more run."""
    experiments = {"gntdev-numa": load_project(REPO).experiments["gntdev-numa"]}
    figures = []
    for extra in (None, 3, 4):  # the first render tallies every run; then one more run, twice
        if extra is not None:
            add_run(store, args.runs + extra, args.cells, args.subtests, not args.no_logs, previous)
        t, cpu = time.perf_counter(), sum(cpu_split())
        render_site(store, site, jobs=jobs, experiments=experiments)
        figures.append(f"{time.perf_counter() - t:.2f} s ({sum(cpu_split()) - cpu:.2f} s CPU)")
    cells = json.loads((site / ".manifest.json").read_text())["findings"]["gntdev-numa"]["cells"]
    print(
        f"findings page ({cells} cells of gntdev-numa): {figures[0]} the first time, nothing "
        f"else new; one new run with it {figures[1]}, {figures[2]} (without it {one_run:.2f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--cells", type=int, default=64)
    parser.add_argument("--subtests", type=int, default=15)
    parser.add_argument("--jobs", type=int, default=0, help="render processes (0: the CPUs)")
    parser.add_argument("--dir", type=Path, help="where the store goes (default: a temp dir)")
    parser.add_argument("--no-logs", action="store_true", help="cells without log files")
    parser.add_argument("--keep", action="store_true", help="keep the store and the site")
    args = parser.parse_args()
    shm = Path("/dev/shm")
    temp = shm if shm.is_dir() else None
    base = args.dir or Path(tempfile.mkdtemp(prefix="kbisect-bench-", dir=temp))
    results = base / "results"
    jobs = args.jobs or os.cpu_count() or 1
    logs = not args.no_logs
    print(
        f"store: {args.runs} runs x {args.cells} cells x {args.subtests} subtests "
        f"({'with' if logs else 'without'} log files) in {results}"
    )
    t = time.perf_counter()
    store, previous = make_store(results, args.runs, args.cells, args.subtests, logs)
    print(f"  made in {time.perf_counter() - t:.1f} s; load average {os.getloadavg()[0]:.1f}")
    try:
        site = results / "site"
        t, (mine, theirs) = time.perf_counter(), cpu_split()
        report = render_site(store, site, jobs=jobs)
        scratch = time.perf_counter() - t
        mine, theirs = cpu_split()[0] - mine, cpu_split()[1] - theirs
        files, total = size_of(site)
        print(
            f"from scratch ({jobs} processes): {scratch:.2f} s (target < 10 s), "
            f"{mine + theirs:.1f} s CPU ({theirs:.1f} s in workers); "
            f"{len(report.written)} pages written, {files} files, {total / 2**20:.0f} MiB"
        )
        print(f"  largest page: {report.largest[0]} ({report.largest[1] / 1024:.0f} KiB)")
        t = time.perf_counter()
        report = render_site(store, site, jobs=jobs)
        print(
            f"nothing new: {time.perf_counter() - t:.2f} s; {len(report.written)} written, "
            f"{report.skipped} pages not rendered"
        )
        times = []
        for extra in range(3):
            add_run(store, args.runs + extra, args.cells, args.subtests, logs, previous)
            t = time.perf_counter()
            report = render_site(store, site, jobs=jobs)
            times.append(time.perf_counter() - t)
        print(
            f"one new run: {min(times):.2f} s best of 3, {max(times):.2f} s worst (target < 1 s); "
            f"{len(report.written)} pages written, {report.unchanged} rendered unchanged, "
            f"{report.skipped} not rendered"
        )
        print(f"  load average {os.getloadavg()[0]:.1f} (the machine's other work slows all this)")
        measure_findings(store, site, jobs, args, previous, min(times))
    finally:
        store.close()
        if not args.keep and args.dir is None:
            shutil.rmtree(base, ignore_errors=True)
        elif args.keep:
            print(f"kept: {base}")


if __name__ == "__main__":
    main()
