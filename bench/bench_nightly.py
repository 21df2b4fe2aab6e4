"""Nightly benchmark: the four-variant matrix for one already-built revision on the embedded host
(target: under 60 s on 2 cores), and host utilisation during a nightly after its first build
(target: the host busy at least 80% of the time).

    python3 bench/bench_nightly.py [--tags N] [--standby both|on|off] [--keep]

Runs the shipped pipelines/nightly.yaml (narrowed to the newest N imported tags, default 1)
with the machine's kbisect cache, so builds that exist are reused; results go to a temporary
directory. With --standby both (the default) it runs twice: with the embedded host's standby
QEMU (the next build boots while a job runs; the shipped setting) and without it. Utilisation is
the host's own account, printed by the nightly: the share of time after its first build that
its worker was not waiting for a build. The load average is printed: other work on the machine
slows every figure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kbisect.results.store import ResultsStore

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, default=1, help="newest imported tags to test")
    parser.add_argument("--standby", choices=("both", "on", "off"), default="both")
    parser.add_argument("--keep", action="store_true", help="keep the results directory")
    args = parser.parse_args()
    for standby in (True, False) if args.standby == "both" else (args.standby == "on",):
        bench(args.tags, standby, args.keep)


def bench(tags: int, standby: bool, keep: bool) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-nightly-"))
    root = work / "project"
    for part in ("configs", "seeds", "pipelines"):
        shutil.copytree(REPO / part, root / part)
    nightly = root / "pipelines/nightly.yaml"
    nightly.write_text(nightly.read_text().replace("newest_tags: 2", f"newest_tags: {tags}"))
    lab = root / "configs/lab.yaml"
    setting = f"    qemu:\n      standby: {'on' if standby else 'off'}\n"
    lab.write_text(lab.read_text().replace("    qemu:\n", setting, 1))
    env = {**os.environ, "KBISECT_ROOT": str(root), "KBISECT_RESULTS": str(work / "results")}
    load = os.getloadavg()[0]
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "kbisect", "nightly"],
        capture_output=True, text=True, env=env, timeout=7200, check=False,
    )  # fmt: skip
    wall = time.monotonic() - started
    if done.returncode not in (0, 1):
        print(done.stdout[-3000:], done.stderr[-2000:])
        raise SystemExit(f"nightly failed with exit {done.returncode}")
    with ResultsStore(work / "results") as store:
        run = store.runs()[0]
        cells = sorted(store.cells(run.id), key=lambda c: c.started or run.started)
    assert cells and all(c.started and c.finished for c in cells)
    first_start = min(c.started for c in cells if c.started)
    last_end = max(c.finished for c in cells if c.finished)
    jobs = sum((c.finished - c.started).total_seconds() for c in cells if c.started and c.finished)
    window = (last_end - first_start).total_seconds()
    mode = "with the standby QEMU" if standby else "without the standby QEMU"
    print(f"nightly {mode}: {len(cells)} cells, {len({c.rev for c in cells})} revision(s), "
          f"exit {done.returncode}, load average {load:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after")  # fmt: skip
    print(f"  wall time, whole command          {wall:7.1f} s")
    print(f"  first job start to last job end   {window:7.1f} s")
    print(f"  time inside jobs                  {jobs:7.1f} s")
    print(f"  per cell (deploy + job), mean     {window / len(cells):7.1f} s")
    print(f"  standby boots used                {done.stdout.count('booted on standby'):7d}")
    if tags == 1:
        print(f"  four-variant matrix, one built revision: {wall:.1f} s (target < 60 s)")
    busy = _busy_fraction(done.stdout)
    if busy is not None:
        print(f"  host utilisation after the first build: {busy:.0%} (target >= 80%)")
    if keep:
        print(f"  results kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


def _busy_fraction(stdout: str) -> float | None:
    """The host's own account (printed by the nightly): busy share after its first build."""
    for line in stdout.splitlines():
        if ": busy " in line and "after its first build" in line:
            return float(line.split(": busy ", 1)[1].split("%", 1)[0]) / 100
    return None


if __name__ == "__main__":
    main()
