"""Rack machine benchmark: the emulated rack machine (Debian 12, GRUB2, Xen from its own disk)
against the embedded host, on the same build.

    python3 bench/bench_rack.py [--rev REV] [--variant V] [--cold-image]

Prints: the disk image built from scratch (only with --cold-image: it builds into a temporary
cache, about 90 s idle and 3 minutes under load, and needs root); a cold boot to SSH (power on
with a new disk); the first rack cycle and a later one (install -> grub -> reboot -> SSH -> verify:
`deploy`; the first also installs the grub.d script and runs update-grub); a boot
of the embedded host with the same build; and the gntstress job on each host (`stress`). Uses
the machine's kbisect cache and the repository's configuration; builds the revision's variant
first if the store has no build of it. The VM is switched off at the end. The load average is
printed: other work on the machine slows every figure.
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

from kbisect.build import builder
from kbisect.config import load_project
from kbisect.config.model import EmulatedMachine
from kbisect.deadline import Deadline
from kbisect.errors import InfraError
from kbisect.lab.machine.image import ImageRecipe, ensure_image
from kbisect.lab.ssh import fetch_host_key
from kbisect.tree import repos
from kbisect.tree.checkout import checkout, slot
from kbisect.tree.variants import find_variant

REPO = Path(__file__).resolve().parent.parent
HOST = "rack-vm"
# The repository's configuration, copied so that `lab.trust` pins the VM's key there and not in
# the checkout's configs/known_hosts.
PROJECT = Path(tempfile.mkdtemp(prefix="kbisect-bench-rack-"))


def kbisect(*args: str, timeout: float = 1800) -> float:
    """Seconds that `kbisect ARGS` took, in the bench's own copy of the configuration."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "kbisect", *args],
        cwd=PROJECT, env={**os.environ, "KBISECT_ROOT": str(PROJECT)},
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if done.returncode not in (0, 1):
        sys.exit(f"kbisect {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return time.monotonic() - started


def report(label: str, seconds: float, note: str = "") -> None:
    print(f"{label:48} {seconds:8.1f} s   {note}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default=None, help="revision (default: the newest imported)")
    parser.add_argument("--variant", default="vm-mixedmap")
    parser.add_argument("--cold-image", action="store_true", help="also build an image cold")
    args = parser.parse_args()
    shutil.copytree(REPO / "configs", PROJECT / "configs", ignore=shutil.ignore_patterns("known_*"))
    for part in ("seeds", "pipelines"):
        (PROJECT / part).symlink_to(REPO / part)
    try:
        measure(args)
    finally:
        shutil.rmtree(PROJECT, ignore_errors=True)


def measure(args: argparse.Namespace) -> None:
    project = load_project(PROJECT)
    tree = repos.open_tree(project, "debian-6.1")
    rev = args.rev or repos.newest_tags(tree, 1)[0]
    print(f"revision {rev}, variant {args.variant}; load average {os.getloadavg()[0]:.1f}")
    if args.cold_image:
        with tempfile.TemporaryDirectory() as cache:
            started = time.monotonic()
            ensure_image(ImageRecipe.of(EmulatedMachine()), Path(cache), lambda _: None)
            report("disk image from scratch (mmdebstrap + disk)", time.monotonic() - started)
    with slot(project, tree) as path:
        co = checkout(project, tree, rev, find_variant(project, args.variant), path)
        artifact = builder.build(project, co, project.profile(None)).artifact
    assert artifact is not None, "the build failed"
    key = artifact.key
    kbisect("lab.power", HOST, "off")
    started = time.monotonic()
    kbisect("lab.power", HOST, "on", "--fresh", timeout=3600)
    ssh = project.hosts[HOST].ssh
    _wait_sshd(ssh.port if ssh else 22)
    report("cold boot to SSH (power on, new disk)", time.monotonic() - started)
    try:
        kbisect("lab.trust", HOST, "--yes")
        first = kbisect("deploy", key, "-o", HOST)
        report("first rack cycle (also installs 42_kbisect)", first, "(update-grub once)")
        again = kbisect("deploy", key, "-o", HOST)
        report("one rack cycle (deploy: install, grub, reboot)", again, "(every later deploy)")
        report("embedded host boot of the same build", kbisect("deploy", key, "-o", "qemu"))
        rack = kbisect("stress", "--job", "gntstress", "-o", HOST)
        qemu = kbisect("stress", "--job", "gntstress", "-o", "qemu")
        report("gntstress on rack-vm", rack, f"({rack / qemu:.2f}x the embedded host)")
        report("gntstress on qemu", qemu)
    finally:
        kbisect("lab.down")
        kbisect("lab.power", HOST, "off")


def _wait_sshd(port: int) -> None:
    deadline = Deadline(900)
    while True:
        try:
            fetch_host_key("127.0.0.1", port, Deadline(10))
            return
        except InfraError:  # booting: not answering yet
            if deadline.expired:
                raise
            time.sleep(2)


if __name__ == "__main__":
    main()
