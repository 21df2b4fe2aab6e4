"""A LAVA device against the embedded host: the four gntdev variants, and a demo bisection.

python3 bench/bench_lava.py [--rev v6.1.192-3] [--variants vm-mixedmap,vm-io,none,mempolicy]
                            [--hosts qemu,lava-qemu] [--no-cells] [--bisect [--commits 8]]
                            [--out DIR] [--lock /tmp/kbisect-heavy.lock]

Cells: for each variant of gntdev-numa, `kbisect run --job gntstress` of the revision on each
host in turn (the embedded host `qemu`, then the LAVA device `lava-qemu` of the local lab that
scripts/lava-lab sets up, root); prints each cell's verdict, its failing subtests and its seconds,
and whether the variant's signature (every subtest's status but those the experiment records as
flaky) is the same on every host. With `--bisect`: `kbisect demo.history` writes the demo history
(--commits commits on the revision, one of them brings VM_IO back) on the branch demo/lava-more,
and `kbisect bisect --host lava-qemu --test odirect-read` bisects it; prints the culprit found
against the one written, the validations, the predicate runs and the time.

It uses the machine's cache (the builds are store hits, or incremental in the build tree) and a
project copy and results of its own (--out). Every heavy command (the lab's start, each cell,
the bisection) holds the shared lock (--lock; "" for none) only while it runs, at nice 19; the
seconds printed leave out the wait for the lock. A LAVA lab it started, it stops at the end.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
LAB_DIR = Path("/var/lib/kbisect-lava")
URL = "http://127.0.0.1:8000/"
LAVA_HOST = "lava-qemu"
TREE = "debian-6.1"
BRANCH = "demo/lava-more"
_CULPRIT = re.compile(r"^culprit\s+([0-9a-f]{12}) ", re.M)


def heavy(cmd: list[str], env: dict[str, str], lock: str, timeout: float) -> tuple[float, str, int]:
    """Run cmd at nice 19 holding the shared lock; the seconds it ran (not the wait), its
    stdout and exit status. Its stderr (kbisect's progress) goes to ours."""
    with Path(lock or os.devnull).open("a") as held:
        if lock:
            fcntl.flock(held, fcntl.LOCK_EX)
        started = time.monotonic()
        done = subprocess.run(
            ["nice", "-n", "19", *cmd],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
            cwd=REPO,
        )
        return time.monotonic() - started, done.stdout, done.returncode


def kbisect(*args: str) -> list[str]:
    return [sys.executable, "-m", "kbisect", *args]


def lava_answers() -> bool:
    try:
        with urllib.request.urlopen(f"{URL}api/v0.2/system/version/", timeout=5):
            return True
    except OSError:
        return False


def project_copy(out: Path) -> Path:
    """The repository's configs and seeds, with the local LAVA lab's device as a host."""
    root = out / "project"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(REPO / "configs", root / "configs")
    shutil.copytree(REPO / "seeds", root / "seeds")
    with (root / "configs" / "lab.yaml").open("a") as lab:
        lab.write(
            f"\n  - name: {LAVA_HOST}\n    kind: lava\n    lava:\n"
            f"      url: {URL}\n      token_file: {LAB_DIR / 'token'}\n"
            "    boot_timeout: 300\n"
        )
    return root


def flaky_subtests() -> dict[str, set[str]]:
    """gntdev-numa's variants -> the subtests its experiment records as flaky."""
    experiment = yaml.safe_load((REPO / "seeds/gntdev-numa/experiment.yaml").read_text())
    return {
        v["name"]: {name for name, want in v.get("expect", {}).items() if want == "flaky"}
        for v in experiment["variants"]
    }


def run_cells(opts: argparse.Namespace, env: dict[str, str]) -> None:
    hosts, flaky = opts.hosts.split(","), flaky_subtests()
    print(f"\n{'variant':<12} {'host':<10} {'verdict':<7} {'seconds':>7}  failing subtests")
    same = []
    for variant in opts.variants.split(","):
        signatures = {}
        for host in hosts:
            cmd = kbisect("run", "--tree", TREE, "--rev", opts.rev, "--variant",
                          f"gntdev-numa/{variant}", "--job", "gntstress", "--host", host,
                          "--json")  # fmt: skip
            seconds, out, code = heavy(cmd, env, opts.lock, 1800)
            cells = json.loads(out).get("cells", []) if out.strip().startswith("{") else []
            if not cells:
                print(f"{variant:<12} {host:<10} {'none':<7} {seconds:7.0f}  (exit {code})")
                continue
            cell = cells[0]
            statuses = {s["name"]: s["status"] for s in cell["subtests"]}
            failing = sorted(n for n, s in statuses.items() if s != "PASS")
            shown = ", ".join(f"{n}={statuses[n]}" for n in failing) or "-"
            print(f"{variant:<12} {host:<10} {cell['status']:<7} {seconds:7.0f}  {shown}",
                  flush=True)  # fmt: skip
            ignored = flaky.get(variant, set())
            signatures[host] = (
                cell["status"],
                {n: s for n, s in statuses.items() if n not in ignored},
            )
        distinct = {json.dumps(s, sort_keys=True) for s in signatures.values()}
        agree = len(signatures) == len(hosts) and len(distinct) == 1
        same.append(agree)
        ignored_text = ", ".join(sorted(flaky.get(variant, ()))) or "none"
        print(f"{'':<12} signature {'SAME' if agree else 'DIFFERENT'} on {', '.join(hosts)} "
              f"(flaky, not compared: {ignored_text})", flush=True)  # fmt: skip
    print(f"\nvariants with the same signature on every host: {sum(same)} of {len(same)}")


def run_bisection(opts: argparse.Namespace, env: dict[str, str]) -> None:
    made = subprocess.run(
        kbisect("demo.history", "--tree", TREE, "--base", opts.rev, "--commits",
                str(opts.commits), "--branch", BRANCH),
        capture_output=True, text=True, env=env, timeout=300, check=True, cwd=REPO,
    )  # fmt: skip
    print("\n" + made.stderr.strip() + made.stdout.strip())
    written = _CULPRIT.search(made.stderr + made.stdout)
    cmd = kbisect("bisect", "--tree", TREE, "--good", opts.rev, "--bad", BRANCH,
                  "--job", "gntstress", "--test", "odirect-read", "--host", LAVA_HOST,
                  "--json")  # fmt: skip
    print("$ " + " ".join(cmd[2:]), flush=True)
    seconds, out, code = heavy(cmd, env, opts.lock, 5400)
    report: dict[str, Any] = json.loads(out) if out.strip().startswith("{") else {}
    culprit = (report.get("culprit") or {}).get("commit", "")
    expected = written[1] if written else "?"
    print(f"\nbisection on {LAVA_HOST}: exit {code}, status {report.get('status')}, "
          f"{seconds:.0f} s")  # fmt: skip
    print(f"  culprit found {culprit[:12] or '-'}, written {expected}: "
          f"{'RIGHT' if culprit.startswith(expected) else 'WRONG'}")  # fmt: skip
    print(f"  files {(report.get('culprit') or {}).get('files')}; validations "
          f"{ {v['name']: v['ok'] for v in report.get('validations', [])} }")  # fmt: skip
    print(f"  predicate runs {report.get('runs')} ({report.get('predicate_seconds')} s), "
          f"steps {len(report.get('steps', []))}, ends {len(report.get('ends', []))}, "
          f"flags {report.get('flags')}")  # fmt: skip
    for item in [*report.get("ends", []), *report.get("steps", [])]:
        print(f"    {item.get('commit', '')[:12]} {item.get('verdict'):<6} "
              f"runs {item.get('runs')} {str(item.get('detail', ''))[:90]}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rev", default="v6.1.192-3")
    ap.add_argument("--variants", default="vm-mixedmap,vm-io,none,mempolicy")
    ap.add_argument("--hosts", default=f"qemu,{LAVA_HOST}")
    ap.add_argument("--no-cells", action="store_true", help="skip the four-variant comparison")
    ap.add_argument("--bisect", action="store_true", help="bisect the demo history on LAVA")
    ap.add_argument("--commits", type=int, default=8)
    ap.add_argument("--out", type=Path, default=None, help="default: a temporary directory")
    ap.add_argument("--lock", default="/tmp/kbisect-heavy.lock")
    opts = ap.parse_args()
    out = opts.out or Path(tempfile.mkdtemp(prefix="kbisect-bench-lava-"))
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "KBISECT_ROOT": str(project_copy(out)),
           "KBISECT_RESULTS": str(out / "results")}  # fmt: skip
    started_lab = (LAVA_HOST in opts.hosts.split(",") or opts.bisect) and not lava_answers()
    if started_lab:
        took, _, code = heavy([str(REPO / "scripts/lava-lab"), "up"], env, opts.lock, 900)
        print(f"lava-lab up: {took:.0f} s (exit {code})", flush=True)
    try:
        if not opts.no_cells:
            run_cells(opts, env)
        if opts.bisect:
            run_bisection(opts, env)
    finally:
        if started_lab:  # left as it was found
            subprocess.run([str(REPO / "scripts/lava-lab"), "down"], timeout=180, check=False)
    print(f"\nresults: {out / 'results'}")


if __name__ == "__main__":
    main()
