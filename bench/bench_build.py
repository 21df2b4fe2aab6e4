"""Build benchmarks (issue 4). Prints figures with their targets; asserts nothing.

python3 bench/bench_build.py [--rev v6.1.192-2] [--full]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from kbisect.build import builder
from kbisect.config import Project, load_project
from kbisect.tree import repos
from kbisect.tree.checkout import checkout, slot
from kbisect.tree.variants import find_variant

REPO = Path(__file__).resolve().parent.parent
VARIANTS = ["vm-mixedmap", "vm-io", "none", "mempolicy"]


def timed_build(project: Project, rev: str, variant: str) -> tuple[float, builder.BuildOutcome]:
    tree = repos.open_tree(project, "debian-6.1")
    start = time.monotonic()
    with slot(project, tree) as path:
        co = checkout(project, tree, rev, find_variant(project, variant), path)
        outcome = builder.build(project, co, project.profiles["xen-dom0"])
    return time.monotonic() - start, outcome


def forget(project: Project, key: str) -> None:
    shutil.rmtree(project.cache_dir / "artifacts" / key, ignore_errors=True)


def report(label: str, seconds: float, target: str, extra: str = "") -> None:
    print(f"{label:52} {seconds:8.2f} s   (target {target}) {extra}", flush=True)


def full_comparison(rev: str) -> None:
    """kbisect's first build in an empty cache against plain make -j2 of the same .config."""
    with tempfile.TemporaryDirectory(prefix="kbisect-bench-") as tmp:
        os.environ["KBISECT_CACHE"] = tmp
        debs = Path(tmp) / "debian" / "debs"
        debs.parent.mkdir(parents=True)
        real_cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kbisect"
        debs.symlink_to(real_cache / "debian" / "debs")
        shutil.copytree(real_cache / "trees", Path(tmp) / "trees", symlinks=True)
        project = load_project(REPO)
        seconds, outcome = timed_build(project, rev, "vm-mixedmap")
        assert outcome.artifact is not None, outcome.errors
        src = project.cache_dir / "worktrees" / "debian-6.1" / "slot-0"
        plain = Path(tmp) / "plain"
        plain.mkdir()
        shutil.copyfile(outcome.artifact.path / "config", plain / ".config")
        env = dict(os.environ, CCACHE_DIR=str(Path(tmp) / "plain-ccache"))
        start = time.monotonic()
        subprocess.run(
            ["make", "-C", str(src), f"O={plain}", "-j2", "CC=ccache gcc", "bzImage", "modules"],
            env=env,
            check=True,
            capture_output=True,
            timeout=7200,
        )
        baseline = time.monotonic() - start
        report("plain make -j2 bzImage modules (cold ccache)", baseline, "-")
        overhead = 100 * (seconds - baseline) / baseline
        report(
            "kbisect first build (cold ccache)",
            seconds,
            "overhead < 5%",
            f"overhead {overhead:+.1f}%",
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rev", default="v6.1.192-2")
    parser.add_argument("--full", action="store_true", help="also the first-build comparison")
    args = parser.parse_args()
    project = load_project(REPO)
    print(f"cache {project.cache_dir}; revision {args.rev}; {os.cpu_count()} cores")

    seconds, first = timed_build(project, args.rev, "vm-mixedmap")
    print(f"(setup: vm-mixedmap {first.status} in {seconds:.1f} s)")
    seconds, hit = timed_build(project, args.rev, "vm-mixedmap")
    report("cache hit (checkout + key + lookup)", seconds, "< 1 s", f"status {hit.status}")

    for v in VARIANTS[1:]:  # make sure the set is rebuilt, not found
        _, o = timed_build(project, args.rev, v)
        forget(project, o.key)
    seconds, switch = timed_build(project, args.rev, "vm-io")
    report(
        "variant switch vm-mixedmap -> vm-io (checkout+build)",
        seconds,
        "< 5 s",
        f"rebuilt {switch.meta.get('rebuilt_count')} objects",
    )

    keys = []
    start = time.monotonic()
    for v in VARIANTS:
        _, o = timed_build(project, args.rev, v)
        keys.append((o.key, o.status))
    report(
        "four-variant set after the first build",
        time.monotonic() - start,
        "< 30 s",
        " ".join(s for _, s in keys),
    )
    if args.full:
        full_comparison(args.rev)


if __name__ == "__main__":
    main()
