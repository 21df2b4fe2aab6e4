"""A cold dom0 build here against the same build distributed with distcc (issue 22, part 2).

python3 bench/bench_distcc.py [--rev v6.1.192-2] [--builder-jobs 2]

Both builds start from nothing (empty ccache, build tree and artifact store; the tree mirror is
copied from the machine's cache) and run `kbisect build` in a controller network namespace; the
distributed one sends its compiles to a real distccd in a second namespace on this same machine
(tests/distcc_lab.py). On one 2-core machine the builder's cores are the controller's, so this
measures distcc's overhead, not a gain. From the figures measured here it prints a model of the
gain with N builders. Root only (namespaces); two cold kernel builds, 10-15 minutes on 2 cores.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.distcc_lab import DistccLab, copy_project, kbisect_build  # noqa: E402

# distccd's summary of a job: "... COMPILE_OK ... time:177ms /usr/bin/gcc drivers/xen/gntdev.c"
_JOB_TIME = re.compile(r"COMPILE_OK .* time:(\d+)ms \S+ (\S+)$", re.M)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cold_cache(base: Path, name: str) -> Path:
    """An empty kbisect cache with the tree mirror and the downloaded .debs of the real one."""
    real = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kbisect"
    cache = base / name
    (cache / "debian").mkdir(parents=True)
    (cache / "debian" / "debs").symlink_to(real / "debian" / "debs")
    shutil.copytree(real / "trees", cache / "trees", symlinks=True)
    return cache


def timed(lab: DistccLab, root: Path, cache: Path, rev: str) -> dict[str, float | str]:
    """One `kbisect build` in the controller's namespace: wall time, CPU time of everything it
    ran there, and the build's own record."""
    cpu, start = children_cpu(), time.monotonic()
    shown = kbisect_build(lab, root, cache, "debian-6.1", rev, "vm-mixedmap", "xen-dom0")
    wall, cpu = time.monotonic() - start, children_cpu() - cpu
    meta = json.loads((Path(shown["artifact"]) / "meta.json").read_text())
    return {"wall": wall, "cpu": cpu, "key": shown["key"], "build": meta["duration_s"]}


def model(
    local: dict[str, float | str], dist: dict[str, float | str], builder_cpu: float, slots: int
) -> None:
    """T(N) = serial + max(controller CPU / its cores, builder CPU / (N builders x slots)), with
    serial the part of the local build that its CPU time over the cores does not explain."""
    cores = os.cpu_count() or 1
    local_s, controller_cpu = float(local["build"]), float(dist["cpu"])
    serial = max(local_s - float(local["cpu"]) / cores, 0.0)
    print("\nmodel: T(N) = serial + max(controller CPU / its cores, builder CPU / (N x slots))")
    print(f"  serial {serial:.0f} s; controller CPU {controller_cpu:.0f} s on {cores} cores; "
          f"builder CPU {builder_cpu:.0f} s; {slots} slots a builder")  # fmt: skip
    print(f"  {'builders':>8} {'T(N) s':>8} {'vs local':>9}")
    for n in (1, 2, 4, 8, 16, 32):
        t = serial + max(controller_cpu / cores, builder_cpu / (n * slots))
        print(f"  {n:>8} {t:8.0f} {local_s / t:8.2f}x")
    floor = serial + controller_cpu / cores
    print(f"  limit, however many builders (the controller preprocesses every object): "
          f"{floor:.0f} s, {local_s / floor:.2f}x")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rev", default="v6.1.192-2")
    parser.add_argument("--builder-jobs", type=int, default=2, help="distccd --jobs")
    args = parser.parse_args()
    where = Path.home() / ".cache" / "kbisect" / "distbuild"
    where.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-", dir=where) as tmp:
        base = Path(tmp)
        lab = DistccLab(base / "lab", jobs=args.builder_jobs)
        try:
            print(f"{os.cpu_count()} cores; builder {lab.host}; revision {args.rev}", flush=True)
            local = timed(
                lab,
                copy_project(base / "project-local", []),
                cold_cache(base, "cache-local"),
                args.rev,
            )
            print(f"local       wall {local['wall']:7.1f} s  build {local['build']:7.1f} s  "
                  f"controller CPU {local['cpu']:7.1f} s", flush=True)  # fmt: skip
            root = copy_project(base / "project-distcc", [lab.host])
            before = lab.cpu_seconds()
            dist = timed(lab, root, cold_cache(base, "cache-distcc"), args.rev)
            builder_cpu = lab.cpu_seconds() - before
            jobs = [int(ms) / 1000 for ms, _ in _JOB_TIME.findall(lab.log.read_text())]
            print(f"distributed wall {dist['wall']:7.1f} s  build {dist['build']:7.1f} s  "
                  f"controller CPU {dist['cpu']:7.1f} s", flush=True)  # fmt: skip
            overhead = 100 * (float(dist["build"]) - float(local["build"])) / float(local["build"])
            print(f"same key: {local['key'] == dist['key']} ({dist['key']}); "
                  f"distributed vs local: {overhead:+.1f}%")  # fmt: skip
            print(f"jobs on the builder: {len(jobs)}; per object median "
                  f"{statistics.median(jobs):.2f} s, p90 {statistics.quantiles(jobs, n=10)[-1]:.2f}"
                  f" s, max {max(jobs):.2f} s, sum {sum(jobs):.0f} s")  # fmt: skip
            print(f"builder CPU {builder_cpu:.0f} s (its compilers included)")
            model(local, dist, builder_cpu, args.builder_jobs)
        finally:
            lab.close()


if __name__ == "__main__":
    main()
