"""What the xen-dom0-debug profile costs next to xen-dom0: the build and a gntstress cell.

python3 bench/bench_debug_profile.py [--rev v6.1.192-3] [--variant gntdev-numa/mempolicy]
                                     [--profiles xen-dom0,xen-dom0-debug] [--results DIR]

For each profile, in turn: `kbisect build` of the revision and variant (cold unless the store
already has the key: the figure says which), then `kbisect run` of the gntstress job on the
embedded host (boot, job, collect). Prints the build's seconds, the cell's seconds, the job's
seconds per subtest (from gntstress's own "took" lines) and the cell's verdict; asserts nothing.
A cold debug build (KFENCE, lockdep, kmemleak, SLUB debug) is many minutes on 2 cores: run it
under the shared lock (`flock /tmp/kbisect-heavy.lock nice -n 19 ...`), once.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_TOOK = re.compile(r"^gntstress: (\S+) took ([\d.]+)s$", re.M)


def kbisect(args: list[str], env: dict[str, str], timeout: float) -> tuple[float, str, int]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "kbisect", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
        cwd=REPO,
    )
    sys.stderr.write(done.stderr[-2000:])
    return time.monotonic() - started, done.stdout, done.returncode


def subtest_seconds(results: Path) -> dict[str, float]:
    logs = sorted(results.glob("runs/*/**/job-output.log"), key=lambda p: p.stat().st_mtime)
    return {m[1]: float(m[2]) for m in _TOOK.finditer(logs[-1].read_text())} if logs else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rev", default="v6.1.192-3")
    ap.add_argument("--variant", default="gntdev-numa/mempolicy")
    ap.add_argument("--profiles", default="xen-dom0,xen-dom0-debug")
    ap.add_argument("--results", type=Path, default=None, help="default: a temporary directory")
    opts = ap.parse_args()
    results = opts.results or Path(tempfile.mkdtemp(prefix="kbisect-bench-debug-"))
    env = {**os.environ, "KBISECT_ROOT": str(REPO), "KBISECT_RESULTS": str(results)}
    common = ["--tree", "debian-6.1", "--rev", opts.rev, "--variant", opts.variant]
    figures = {}
    for profile in opts.profiles.split(","):
        built, out, rc = kbisect(["build", *common, "--profile", profile], env, 7200)
        cached = "cached" in out.lower() or built < 60
        cell, out, rc_run = kbisect(
            ["run", *common, "--profile", profile, "--job", "gntstress", "--json"], env, 3600
        )
        verdict = json.loads(out) if out.strip().startswith("{") else {}
        figures[profile] = {
            "build_s": round(built, 1),
            "build": "store hit or warm" if cached else "cold",
            "build_exit": rc,
            "cell_s": round(cell, 1),
            "run_exit": rc_run,
            "subtests_s": subtest_seconds(results),
            "cells": [
                (c.get("status"), c.get("reason", "")[:160]) for c in verdict.get("cells", [])
            ],
        }
        print(f"{profile}: build {built:.0f} s ({figures[profile]['build']}, exit {rc}), "
              f"cell {cell:.0f} s (exit {rc_run})")  # fmt: skip
    print(json.dumps(figures, indent=2))
    print(f"results: {results}")


if __name__ == "__main__":
    main()
