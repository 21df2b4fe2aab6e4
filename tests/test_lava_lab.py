"""LAVA hosts against a real LAVA lab on this machine: lava-server and lava-dispatcher 2023.01
from Debian 12 (./bootstrap --test installs them), set up and started by scripts/lava-lab for the
session (a worker here, a `qemu` device, a user and its token; loopback only), and ended by it.

A cell through LAVA (`kbisect run --host` a LAVA device) gives the verdict and subtest statuses
the embedded host gives for the same build (the seed experiment's expectations, which record the
embedded host's); a job LAVA times out, and one canceled under kbisect, are ERROR with LAVA's
reason. Jobs boot Xen and the session's dom0 builds under QEMU (TCG) on the LAVA worker."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO
from kbisect.build.store import Artifact
from kbisect.config import Project
from kbisect.config.model import Host, LavaOptions
from kbisect.errors import InfraError
from kbisect.jobs.gntstress import SUBTESTS
from kbisect.jobs.program import program_of
from kbisect.jobs.runner import run_job
from kbisect.lab.lab import lab_paths
from kbisect.lab.lava.host import LavaHost
from kbisect.results.model import LogKind, ResultStatus
from kbisect.results.store import ResultsStore

pytestmark = [pytest.mark.slow, pytest.mark.vm, pytest.mark.needs_root]

LAB_SCRIPT = REPO / "scripts" / "lava-lab"
LAB_DIR = Path("/var/lib/kbisect-lava")
URL = "http://127.0.0.1:8000/"


def _answers() -> bool:
    try:
        with urllib.request.urlopen(f"{URL}api/v0.2/system/version/", timeout=5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def lava_lab() -> Iterator[LavaOptions]:
    """The local LAVA lab, up for the session (left up if it was up before)."""
    if shutil.which("lava-server") is None:
        pytest.fail("LAVA is not installed: ./bootstrap --test installs lava-server")
    was_up = _answers()
    subprocess.run([str(LAB_SCRIPT), "up"], check=True, timeout=600, stdout=subprocess.DEVNULL)
    try:
        yield LavaOptions(url=URL, token_file=str(LAB_DIR / "token"), queue_timeout=300)
    finally:
        if not was_up:
            subprocess.run([str(LAB_SCRIPT), "down"], check=False, timeout=180)


def _host(project: Project, lava: LavaOptions, boot_timeout: int = 300) -> LavaHost:
    config = Host(name="lava-qemu", kind="lava", lava=lava, boot_timeout=boot_timeout)
    return LavaHost(config, lab_paths(project))


def test_a_cell_through_lava_gives_the_embedded_hosts_verdict(
    real_project: Project,
    dom0_builds: dict[str, Artifact],
    debian_tree: tuple[object, list[str]],
    lava_lab: LavaOptions,
    tmp_path: Path,
) -> None:
    """`kbisect run --host` a LAVA device, for the vm-io variant: VM_IO breaks the GUP
    subtests, as on the embedded host; the cell records the LAVA job and its log."""
    root = tmp_path / "project"
    shutil.copytree(REPO / "configs", root / "configs")
    shutil.copytree(REPO / "seeds", root / "seeds")
    with (root / "configs" / "lab.yaml").open("a") as lab:
        lab.write(
            "\n  - name: lava-qemu\n    kind: lava\n    lava:\n"
            f"      url: {URL}\n      token_file: {LAB_DIR / 'token'}\n"
        )
    results = tmp_path / "results"
    env = {**os.environ, "KBISECT_ROOT": str(root), "KBISECT_RESULTS": str(results)}
    rev = debian_tree[1][-1]
    done = subprocess.run(
        [sys.executable, "-m", "kbisect", "run", "--tree", "debian-6.1", "--rev", rev,
         "--variant", "vm-io", "--job", "gntstress", "--host", "lava-qemu"],
        capture_output=True, text=True, env=env, timeout=1200, check=False,
    )  # fmt: skip
    print(done.stdout[-3000:], done.stderr[-2000:])
    assert done.returncode == 1, done.stderr  # FAIL, as on the embedded host

    with ResultsStore(results) as store:
        (run,) = store.runs()
        (cell,) = store.cells(run.id)
    variant = real_project.experiments["gntdev-numa"].variants
    expect = next(v for v in variant if v.name == "vm-io").expect
    got = {s.name: s.status.value for s in cell.subtests}
    assert sorted(got) == sorted(SUBTESTS), "every subtest of the job, each its LAVA case"
    for name, status in got.items():
        wanted = expect.get(name, expect["default"])
        assert wanted == "flaky" or status == wanted.upper(), (name, status, cell.reason)
    assert cell.build_key == dom0_builds["vm-io"].key
    assert cell.fingerprint["hypervisor"] == "xen"
    assert cell.fingerprint["lava_job_url"] == f"{URL}scheduler/job/{cell.fingerprint['lava_job']}"
    kinds = {log.kind for log in cell.logs}
    assert {LogKind.LAVA_LOG, LogKind.CONSOLE, LogKind.JOB_OUTPUT} <= kinds
    lava_log = next(log for log in cell.logs if log.kind is LogKind.LAVA_LOG)
    assert "lava-dispatcher" in (results / lava_log.path).read_text()


def test_a_boot_lava_times_out_is_error_with_lavas_reason(
    real_project: Project, dom0_builds: dict[str, Artifact], lava_lab: LavaOptions, tmp_path: Path
) -> None:
    host = _host(real_project, lava_lab, boot_timeout=5)  # Xen and dom0 need more under TCG
    job = real_project.jobs["gntstress"]
    host.deploy(dom0_builds["vm-mixedmap"])
    binary = program_of(job).binary(real_project.cache_dir)
    result = run_job(host, job, 1, binary, tmp_path / "out", print)
    assert result.verdict.status is ResultStatus.ERROR
    assert f"LAVA job {result.facts['lava_job']} Incomplete" in result.verdict.reason
    assert "timed out" in result.verdict.reason.lower()


def test_a_job_no_device_takes_is_canceled_after_the_queue_timeout(
    real_project: Project, dom0_builds: dict[str, Artifact], lava_lab: LavaOptions, tmp_path: Path
) -> None:
    """The device goes into maintenance after the deploy's check: the job waits in LAVA's queue
    until kbisect cancels it (ERROR with the reason); nothing boots."""
    lava = dataclasses.replace(lava_lab, queue_timeout=5)
    host = _host(real_project, lava)
    job = real_project.jobs["gntstress"]
    host.deploy(dom0_builds["vm-mixedmap"])
    _device_health("MAINTENANCE")
    try:
        with pytest.raises(InfraError, match="no usable qemu device"):
            host.deploy(dom0_builds["vm-mixedmap"])  # checked at the next deploy
        binary = program_of(job).binary(real_project.cache_dir)
        result = run_job(host, job, 1, binary, tmp_path / "out", print)
    finally:
        _device_health("GOOD")
    assert result.verdict.status is ResultStatus.ERROR
    assert result.verdict.reason == (
        f"LAVA job {result.facts['lava_job']} canceled by kbisect: "
        "no qemu device took it within 5 s"
    )


def _device_health(health: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        ["lava-server", "manage", "devices", "update", "--health", health, "kbisect-qemu-01"],
        env={**env, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, check=True, timeout=120,
        capture_output=True,
    )  # fmt: skip


def test_a_job_canceled_while_kbisect_follows_it_is_error(
    real_project: Project, dom0_builds: dict[str, Artifact], lava_lab: LavaOptions, tmp_path: Path
) -> None:
    """The Lab ending (Ctrl-C, SIGTERM) shuts its hosts down: a LAVA host cancels its job."""
    canceled = threading.Event()
    hosts: list[LavaHost] = []

    def say(line: str) -> None:  # the host's own progress lines
        print(line)
        if "submitted" in line and hosts[0].shutdown():  # what Lab.close does
            canceled.set()

    config = Host(name="lava-qemu", kind="lava", lava=lava_lab)
    hosts.append(LavaHost(config, lab_paths(real_project), say))
    job = real_project.jobs["gntstress"]
    hosts[0].deploy(dom0_builds["vm-mixedmap"])
    binary = program_of(job).binary(real_project.cache_dir)
    result = run_job(hosts[0], job, 1, binary, tmp_path / "out", print)
    assert canceled.is_set()
    assert result.verdict.status is ResultStatus.ERROR
    assert "Canceled" in result.verdict.reason, result.verdict.reason
