"""The embedded host for real: Debian's Xen 4.17 under QEMU booting kbisect's own dom0 builds."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO
from kbisect.build.store import Artifact
from kbisect.config import Project
from kbisect.config.model import Host, Job, QemuOptions
from kbisect.deadline import Deadline
from kbisect.jobs.runner import run_job
from kbisect.lab.embedded import EmbeddedHost
from kbisect.lab.lab import Lab
from kbisect.lab.protocol import HostBroken, LabPaths
from kbisect.lab.qemu import PROC_MARKER
from kbisect.lab.ssh import generate_keypair
from kbisect.results.model import LogKind, ResultStatus

pytestmark = pytest.mark.vm  # boots the embedded Xen host under QEMU


def our_qemus() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if PROC_MARKER.encode() in cmdline and b"qemu-system" in cmdline:
                found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_boot_verify_switch_variant_and_shut_down(
    real_project: Project, dom0_builds: dict[str, Artifact]
) -> None:
    with Lab(real_project, say=print) as lab:
        host = lab.host("qemu")
        assert isinstance(host, EmbeddedHost)
        first = host.deploy(dom0_builds["vm-mixedmap"])
        assert first.build_key == dom0_builds["vm-mixedmap"].key
        fp = first.fingerprint
        assert fp["hypervisor"] == "xen" and fp["xen_version"].startswith("4.17")
        assert fp["numa_nodes"] == "2" and fp["numa_balancing"] == "1"
        assert "dom0_mem=1024M" in fp["xen_cmdline"]
        with host.connect(Deadline(30)) as session:
            assert session.run(["cat", "/sys/hypervisor/type"], Deadline(30)).text() == "xen\n"
            absent = session.run(["test", "-c", "/dev/xen/gntdev"], Deadline(30))
            loaded = session.run_shell(
                "modprobe xen-gntdev && test -c /dev/xen/gntdev", Deadline(60)
            )
        assert absent.status != 0 and loaded.ok, loaded
        pid = host.qemu.state().pid  # type: ignore[union-attr]

        second = host.deploy(dom0_builds["vm-io"])
        assert second.build_key == dom0_builds["vm-io"].key
        assert second.boot_id != first.boot_id
        assert not running(pid), "the first QEMU was ended"
        assert json.loads(host.deployment_file.read_text())["build_key"] == second.build_key
        assert our_qemus()
    assert our_qemus() == [], "leaving the Lab ends every QEMU it started"


def policies(pid: int) -> set[int]:
    """The scheduling policies of a process's threads, once it is QEMU (a standby starts as
    `chrt`, which sets the policy and then execs QEMU)."""
    deadline = Deadline(10)
    while Path(f"/proc/{pid}/comm").read_text().strip() == "chrt" and not deadline.expired:
        time.sleep(0.05)
    return {os.sched_getscheduler(int(t.name)) for t in Path(f"/proc/{pid}/task").iterdir()}


@pytest.mark.slow
def test_a_staged_build_boots_beside_the_running_one_and_is_promoted(
    real_project: Project, dom0_builds: dict[str, Artifact]
) -> None:
    with Lab(real_project, say=print) as lab:
        host = lab.host("qemu")
        assert isinstance(host, EmbeddedHost)
        # copies: the options object belongs to the session's project
        host.qemu.opts = dataclasses.replace(host.qemu.opts, standby="off")
        assert not host.stage(dom0_builds["none"]), "qemu.standby: off stages nothing"
        host.qemu.opts = dataclasses.replace(host.qemu.opts, standby="on")  # auto wants 4 cores
        host.deploy(dom0_builds["vm-mixedmap"])
        active = host.qemu.state()
        assert active is not None
        assert host.stage(dom0_builds["none"])
        dropped = host.standby.state()
        assert dropped is not None and dropped.pid != active.pid
        assert host.stage(dom0_builds["vm-io"]), "staging another build replaces the standby"
        assert not running(dropped.pid)
        standby = host.standby.state()
        assert standby is not None and standby.build_key == dom0_builds["vm-io"].key
        assert standby.port != active.port
        assert policies(standby.pid) == {os.SCHED_IDLE}, "a standby only takes spare CPU"
        with host.connect(Deadline(30)) as session:  # the running build still answers
            assert session.run(["cat", "/etc/kbisect-build"], Deadline(30)).text().strip() == (
                dom0_builds["vm-mixedmap"].key
            )

        promoted = host.deploy(dom0_builds["vm-io"])
        now = host.qemu.state()
        assert now is not None and now.pid == standby.pid, "the standby became the host"
        assert not running(active.pid)
        assert host.standby.state() is None
        assert policies(now.pid) == {os.SCHED_OTHER}
        assert promoted.build_key == dom0_builds["vm-io"].key  # verified over SSH by deploy
        assert now.console == str(host.console_log()) and Path(now.console).exists()

        assert host.stage(dom0_builds["none"])  # left staged: leaving the Lab ends it too
        left = host.standby.state()
        assert left is not None and policies(left.pid) == {os.SCHED_IDLE}  # QEMU by now
        assert len(our_qemus()) == 2
    assert our_qemus() == []


@pytest.mark.slow
def test_qemu_killed_mid_job_is_an_infrastructure_error(
    real_project: Project, dom0_builds: dict[str, Artifact], tmp_path: Path
) -> None:
    # busybox is static: a program the bare dom0 can run, here a long sleep
    job = Job(name="sleeper", program="/bin/busybox", args=["sleep", "600"], timeout=600)
    with Lab(real_project, say=print) as lab:
        host = lab.host("qemu")
        assert isinstance(host, EmbeddedHost)
        host.deploy(dom0_builds["vm-mixedmap"])
        state = host.qemu.state()
        assert state is not None

        def kill_soon() -> None:
            time.sleep(8)
            os.kill(state.pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_soon)
        killer.start()
        started = time.monotonic()
        result = run_job(host, job, 1, Path(job.program), tmp_path / "cell", print)
        killer.join()
        took = time.monotonic() - started
    assert result.host_died and result.exit_status is None
    assert result.verdict.status is ResultStatus.ERROR
    assert "host died" in result.verdict.reason
    assert took < job.timeout / 2, "noticed at the next poll, not at the job's deadline"
    console = result.logs[LogKind.CONSOLE]
    assert console.exists()
    assert our_qemus() == []


def test_host_that_never_boots_is_broken_with_its_console_kept(tmp_path: Path) -> None:
    """Real Xen and QEMU, but a dom0 'kernel' that is not one: Xen cannot build dom0, the boot
    never reaches the ready marker, power cycles (QEMU restarts) do not help."""
    art = tmp_path / "artifact"
    (art / "modules").mkdir(parents=True)
    (art / "bzImage").write_bytes(b"not a kernel\n" * 100)
    (art / "meta.json").write_text(json.dumps({"kernel_release": "6.1.0-none"}))
    key = tmp_path / "lab" / "id_ed25519"
    generate_keypair(key)
    paths = LabPaths(
        lab_dir=tmp_path / "lab",
        key_path=key,
        public_key=key.with_suffix(".pub").read_text(),
        rack_known_hosts=tmp_path / "known_hosts",
    )
    config = Host(
        name="doomed", kind="qemu", qemu=QemuOptions(), boot_timeout=20, max_power_cycles=1
    )
    host = EmbeddedHost(config, paths, print)
    try:
        with pytest.raises(HostBroken) as broken:
            host.deploy(Artifact("0123456789abcdef", art))
    finally:
        host.shutdown()
    message = str(broken.value)
    assert "after 1 power cycle(s)" in message and "console log kept" in message
    kept = sorted((tmp_path / "lab/doomed").glob("console-broken-*.log"))
    assert len(kept) == 1
    assert "(XEN)" in kept[0].read_text(), "the console shows how far Xen got"
    assert host.broken and our_qemus() == []


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT])  # SIGTERM takes the same path (SystemExit)
def test_interrupting_a_run_ends_qemu(
    real_project: Project,
    dom0_builds: dict[str, Artifact],
    debian_tree: tuple[object, list[str]],
    tmp_path: Path,
    sig: signal.Signals,
) -> None:
    """Ctrl-C (SIGINT) or a kill (SIGTERM) in the middle of a job: QEMU is ended by PID."""
    env = {**os.environ, "KBISECT_ROOT": str(REPO), "KBISECT_RESULTS": str(tmp_path)}
    rev = debian_tree[1][-1]
    argv = [sys.executable, "-m", "kbisect", "run", "--tree", "debian-6.1", "--rev", rev,
            "--variant", "vm-mixedmap", "--job", "gntstress"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    assert proc.stdout is not None
    seen = []
    deadline = Deadline(600)
    try:
        for raw in proc.stdout:  # the run's own deadlines bound this (boot 180 s)
            seen.append(raw.decode(errors="replace"))
            if "running, time limit" in seen[-1] or deadline.expired:
                break
        qemus = our_qemus()
        assert len(qemus) == 1, "".join(seen)
        proc.send_signal(sig)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode != 0, "".join(seen) + rest.decode()
    assert our_qemus() == []
    assert not running(qemus[0]), "ended (at most a zombie waiting for init to reap it)"


def running(pid: int) -> bool:
    """Alive and not a zombie. QEMU's parent has exited by now, so init reaps it, when it will."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
