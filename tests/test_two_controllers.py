"""Two controllers, one shared PostgreSQL store: one nightly run shared by two `kbisect nightly`
processes with separate caches and results directories, against one and then two namespace rack
hosts (real sshd, real builds of the fake kbuild, FAKE grub/reboot, tests/fake_machine.py).

Each cell runs exactly once and no host is driven by both: checked from the store (one record
per cell; a host's cells never overlap in time) and from the host itself, where the job appends
a begin and an end line with the build that the machine booted. Then one controller is killed
with SIGKILL in the middle of a job: its lease expires after the short timeout set here, the
other controller takes the host, deploys again and re-runs the killed cell; nothing else is
lost. The browser renders the run, both hosts' cells, from the shared store.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fake_machine import fake_rack_host
from kbisect.config import Project
from kbisect.deadline import Deadline
from kbisect.lab.store_lease import StoreLeases
from kbisect.results.model import CellRecord, ResultStatus, RunStatus
from kbisect.results.store import ResultsStore
from kbisect.tree.repos import TreeRepo
from netns import NetnsLab, SshHost
from pgserver import PostgresServer
from test_nightly import make_project

REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.needs_root, pytest.mark.slow]  # netns hosts, PostgreSQL, nightlies

LEASE_TIMEOUT = 4  # seconds: how long a killed controller's host stays taken
JOB_SECONDS = 3

# The job on the fake machines: notes on the machine itself when it begins and ends, with the
# build the machine booted, so the host says whether two jobs ever ran on it at once.
JOB = """#!/bin/sh
log="$(kbisect-test-machine)/jobs.log"
key=$(sed -n 's/.*kbisect.build=\\([0-9a-f]*\\).*/\\1/p' /proc/cmdline)
echo "begin $key $(date +%s.%N)" >> "$log"
sleep {seconds}
echo "GNTSTRESS alpha PASS errno=0 detail=ok"
echo "GNTSTRESS-SUMMARY pass=1 fail=0 skip=0"
echo "end $key $(date +%s.%N)" >> "$log"
"""


@dataclass
class Rack:
    work: Path
    hosts: list[SshHost]

    def machine(self, host: str) -> Path:
        return self.work / f"machine-{host}"

    def jobs(self, host: str) -> list[tuple[str, str, float]]:
        """(begin or end, build key, time) as the host logged them."""
        log = self.machine(host) / "jobs.log"
        lines = log.read_text().splitlines() if log.exists() else []
        return [(w[0], w[1], float(w[2])) for w in (line.split() for line in lines)]

    def clear(self) -> None:
        for host in self.hosts:
            (self.machine(host.name) / "jobs.log").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def rack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rack]:
    from kbisect.lab.ssh import generate_keypair

    work = tmp_path_factory.mktemp("twoctl")
    key = work / "id_ed25519"
    generate_keypair(key)
    netns = NetnsLab(work / "lab", key.with_name("id_ed25519.pub"))
    try:
        hosts = [fake_rack_host(netns, name, work)[0] for name in ("rack1", "rack2")]
        for host in hosts:  # tells the job which machine it runs on
            shim = host.shim_dir / "kbisect-test-machine"
            shim.write_text(f"#!/bin/sh\necho {work / f'machine-{host.name}'}\n")
            shim.chmod(0o755)
        yield Rack(work, hosts)
    finally:
        netns.close()


def project(rack: Rack, hosts: list[SshHost], tmp: Path) -> Path:
    """test_nightly's project (v3 of a fake tree, variants base and io), narrowed to one
    revision, with this job and a short lease timeout."""
    root = make_project(rack.work, hosts, tmp)
    (tmp / "fakejob.sh").write_text(JOB.format(seconds=JOB_SECONDS))
    pipeline = root / "pipelines/nightly.yaml"
    pipeline.write_text(pipeline.read_text().replace("[v2, v3]", "[v3]"))
    (root / "configs/kbisect.yaml").write_text(f"settings:\n  lease_timeout: {LEASE_TIMEOUT}\n")
    return root


def controller_env(root: Path, tmp: Path, name: str, url: str) -> dict[str, str]:
    """A controller of its own: its cache and results directory; the store is shared."""
    return {
        **os.environ,
        "KBISECT_ROOT": str(root),
        "KBISECT_CACHE": str(tmp / name / "cache"),
        "KBISECT_RESULTS": str(tmp / name / "results"),
        "KBISECT_STORE": url,
    }


def start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kbisect", "nightly", *args], env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def wait_for(what: str, check: object, seconds: float = 300) -> None:
    deadline = Deadline(seconds)
    while not check():  # type: ignore[operator]
        assert not deadline.expired, f"gave up waiting for {what}"
        time.sleep(0.2)


def first_run(url: str, tmp: Path) -> int | None:
    with ResultsStore(tmp / "reader", url=url) as store:
        runs = store.runs()
    return runs[0].id if runs else None


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    return proc.returncode, out


def two_controllers(root: Path, tmp: Path, url: str) -> tuple[int, list[tuple[int, str]]]:
    """Controller a starts the nightly; b joins its run as soon as it is in the store."""
    a = start(controller_env(root, tmp, "a", url))
    try:
        wait_for("the run in the shared store", lambda: first_run(url, tmp) is not None)
        run_id = first_run(url, tmp)
        assert run_id is not None
        b = start(controller_env(root, tmp, "b", url), "--resume", str(run_id))
    except BaseException:
        os.killpg(a.pid, signal.SIGKILL)
        a.wait(timeout=30)
        raise
    return run_id, [finish(a), finish(b)]


def ran_by(tmp: Path, name: str, run_id: int) -> set[tuple[str, str]]:
    """(variant, host) of the cells whose job logs are in a controller's results directory."""
    base = tmp / name / "results/runs" / str(run_id) / "fake/v3"
    return {
        (variant.name, host.name)
        for variant in (base.iterdir() if base.exists() else [])
        for host in variant.iterdir()
        if any(host.glob("fake/r1/*"))
    }


def started(cell: CellRecord) -> float:
    assert cell.started is not None
    return cell.started.timestamp()


def check_hosts_never_shared(rack: Rack, cells: list[CellRecord]) -> None:
    """From the store: a host's cells never overlap; from the host: its jobs begin and end in
    turn, one per cell, each on the build the cell names."""
    for host in {c.host for c in cells}:
        mine = sorted((c for c in cells if c.host == host), key=started)
        for before, after in itertools.pairwise(mine):
            assert started(before) < started(after) and before.finished, (before, after)
            assert before.finished <= after.started, (before, after)  # type: ignore[operator]
        logged = rack.jobs(host)
        assert [kind for kind, _, _ in logged] == ["begin", "end"] * len(mine), logged
        assert [key for kind, key, _ in logged if kind == "begin"] == [c.build_key for c in mine]


@pytest.mark.parametrize("hosts", [1, 2], ids=["one-host", "two-hosts"])
def test_two_controllers_run_each_cell_once(
    rack: Rack, postgres_server: PostgresServer, tmp_path: Path, hosts: int
) -> None:
    rack.clear()
    url = postgres_server.fresh_schema()
    root = project(rack, rack.hosts[:hosts], tmp_path)
    run_id, done = two_controllers(root, tmp_path, url)
    for code, out in done:
        assert code == 0, out[-3000:]
    with ResultsStore(tmp_path / "reader", url=url) as store:
        run = store.get_run(run_id)
        cells = store.cells(run_id)
    assert run is not None and run.status is RunStatus.FINISHED
    assert len(cells) == 2 * hosts == len({c.identity for c in cells})  # 2 variants x hosts
    assert all(c.status is ResultStatus.PASS for c in cells), cells
    check_hosts_never_shared(rack, cells)
    a, b = ran_by(tmp_path, "a", run_id), ran_by(tmp_path, "b", run_id)
    assert not a & b and len(a | b) == len(cells), (a, b)
    # exactly one controller classified the run and wrote its outputs
    writers = [out for _, out in done if f"kbisect nightly run {run_id}" in out]
    assert len(writers) == 1, [out[-1500:] for _, out in done]
    assert StoreLeases(url, LEASE_TIMEOUT).holders() == [], "every lease released"


def test_killed_controller_loses_its_host_only_for_the_lease_timeout(
    rack: Rack, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    rack.clear()
    url = postgres_server.fresh_schema()
    root = project(rack, rack.hosts, tmp_path)
    leases = StoreLeases(url, LEASE_TIMEOUT)
    a = start(controller_env(root, tmp_path, "a", url))
    b: subprocess.Popen[str] | None = None
    try:
        wait_for("the run in the shared store", lambda: first_run(url, tmp_path) is not None)
        run_id = first_run(url, tmp_path)
        assert run_id is not None
        b = start(controller_env(root, tmp_path, "b", url), "--resume", str(run_id))

        def a_in_a_job() -> str | None:
            for holder in leases.holders():
                jobs = rack.jobs(holder.host)
                if holder.pid == a.pid and jobs and jobs[-1][0] == "begin":
                    return holder.host
            return None

        wait_for("a job of controller a", lambda: a_in_a_job() is not None)
        killed_host = a_in_a_job()
        assert killed_host is not None
        killed_key = rack.jobs(killed_host)[-1][1]
        with ResultsStore(tmp_path / "reader", url=url) as store:
            before = {c.identity: c.id for c in store.cells(run_id)}
        os.kill(a.pid, signal.SIGKILL)
        killed_at = time.time()
        a.wait(timeout=30)
        code, out = finish(b)
    finally:
        for proc in (a, b):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
    assert code == 0, out[-4000:]
    with ResultsStore(tmp_path / "reader", url=url) as store:
        run = store.get_run(run_id)
        cells = store.cells(run_id)
    assert run is not None and run.status is RunStatus.FINISHED
    assert len(cells) == 4 == len({c.identity for c in cells})
    assert all(c.status is ResultStatus.PASS for c in cells), cells
    for cell in cells:  # what was recorded before the kill is kept as it was
        if cell.identity in before:
            assert cell.id == before[cell.identity]
    (rerun,) = [c for c in cells if c.host == killed_host and c.build_key == killed_key]
    assert rerun.identity not in before and rerun.started is not None
    assert rerun.started.timestamp() > killed_at
    assert (rerun.variant.replace("/", "_"), killed_host) in ran_by(tmp_path, "b", run_id)
    # the host: the killed job began before the kill; after it, b ran the cells not recorded
    # yet, one at a time, the killed one first (the killed job's own lines are left out: a dead
    # controller's job may still write its end)
    logged = rack.jobs(killed_host)
    killed_begin = max(t for kind, key, t in logged if kind == "begin" and t < killed_at)
    after = [(kind, key) for kind, key, t in logged if t > killed_at]
    if after.count(("end", killed_key)) == 2:  # the killed job's own end, then b's
        after.remove(("end", killed_key))
    redone = sorted(
        (c for c in cells if c.host == killed_host and c.identity not in before), key=started
    )
    assert redone[0].identity == rerun.identity
    assert after == [x for c in redone for x in (("begin", c.build_key), ("end", c.build_key))]
    assert killed_begin < killed_at
    assert leases.holders() == []
    # the browser renders the lab from the shared store: both hosts' cells of the run
    site = tmp_path / "site"
    rendered = subprocess.run(
        [sys.executable, "-m", "kbisect", "results.render", "--out", str(site)],
        env=controller_env(root, tmp_path, "viewer", url), capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stdout[-2000:] + rendered.stderr
    page = (site / "run" / str(run_id) / "index.html").read_text()
    for host in rack.hosts:
        assert host.name in page


# -- the embedded host -----------------------------------------------------------------------------


@pytest.mark.vm
def test_two_controllers_on_the_embedded_host(
    real_project: Project,
    debian_tree: tuple[TreeRepo, list[str]],
    postgres_server: PostgresServer,
    tmp_path: Path,
) -> None:
    """The embedded `qemu` host, one release, two variants; two controllers share the test
    session's cache (the host's QEMU, its state and the builds: one machine's), each with its own
    results directory. The controller in a job is killed in the middle of it; the other takes the
    host when the lease expires, boots it again (ending the dead one's QEMU) and runs what is
    left; every cell is recorded once, on the build that the host itself reports."""
    _, tags = debian_tree
    root = tmp_path / "project"
    for part in ("configs", "seeds", "pipelines"):
        shutil.copytree(REPO / part, root / part)
    (root / "pipelines/pair.yaml").write_text(
        "description: two controllers\n"
        f"revisions:\n  - {{tree: debian-6.1, revisions: [{tags[-1]}]}}\n"
        "experiments:\n  - {experiment: gntdev-numa, variants: [vm-mixedmap, vm-io]}\n"
        "profiles: [xen-dom0]\nhosts: [qemu]\njobs: [gntstress]\nrepeat: 1\n"
        "auto_bisect: {enabled: false}\n"
    )
    settings = root / "configs/kbisect.yaml"
    settings.write_text(settings.read_text() + "  lease_timeout: 10\n")
    url = postgres_server.fresh_schema()
    env = {
        **os.environ,
        "KBISECT_ROOT": str(root),
        "KBISECT_CACHE": str(real_project.cache_dir),
        "KBISECT_STORE": url,
    }
    procs: dict[str, subprocess.Popen[str]] = {}
    logs = {name: tmp_path / f"{name}.log" for name in ("a", "b")}

    def controller(name: str, *args: str) -> None:
        with logs[name].open("w") as out:
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "kbisect", "nightly", "--pipeline", "pair", *args],
                env={**env, "KBISECT_RESULTS": str(tmp_path / name / "results")}, text=True,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def in_a_job() -> str | None:
        """The controller that holds the host and has a job running on it, if any."""
        holder = StoreLeases(url, 10).holder("qemu")
        for name, proc in procs.items():
            text = logs[name].read_text()
            if (
                holder is not None
                and holder.pid == proc.pid
                and text.count("running, time limit") > text.count(" qemu gntstress r1: ")
            ):
                return name
        return None

    try:
        controller("a")
        wait_for("the run in the shared store", lambda: first_run(url, tmp_path) is not None, 900)
        run_id = first_run(url, tmp_path)
        assert run_id is not None
        controller("b", "--resume", str(run_id))
        wait_for("a job", lambda: in_a_job() is not None, 900)
        victim = in_a_job()
        assert victim is not None
        survivor = "b" if victim == "a" else "a"
        with ResultsStore(tmp_path / "reader", url=url) as store:
            before = {c.identity: c.id for c in store.cells(run_id)}
        os.kill(procs[victim].pid, signal.SIGKILL)
        killed_at = time.time()
        procs[victim].wait(timeout=30)
        code = procs[survivor].wait(timeout=900)
        out = logs[survivor].read_text()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        subprocess.run(  # whatever QEMU is left (b ends its own): by the PID in its state file
            [sys.executable, "-m", "kbisect", "lab.down"], env=env, capture_output=True,
            timeout=120, check=False,
        )  # fmt: skip
    assert code == 0 or code == 1, out[-4000:]  # 1: a variant's subtest failed, as it may
    with ResultsStore(tmp_path / "reader", url=url) as store:
        run = store.get_run(run_id)
        cells = store.cells(run_id)
    assert run is not None and run.status is RunStatus.FINISHED
    assert len(cells) == 2 == len({c.identity for c in cells}), cells
    assert all(c.status is not ResultStatus.ERROR for c in cells), [c.reason for c in cells]
    for cell in cells:
        if cell.identity in before:  # recorded before the kill: kept as it was
            assert cell.id == before[cell.identity]
        else:  # run by the survivor after the kill, on a host it booted itself
            assert started(cell) > killed_at
        # the host's own account of what it booted: the cell's build
        assert f"kbisect.build={cell.build_key}" in cell.fingerprint["dom0_cmdline"].split()
    for before_cell, after_cell in itertools.pairwise(sorted(cells, key=started)):
        assert before_cell.finished <= after_cell.started  # type: ignore[operator]
    assert len(cells) - len(before) >= 1, "the killed cell was run again"
    assert StoreLeases(url, 10).holders() == []
