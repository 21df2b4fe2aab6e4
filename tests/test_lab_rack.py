"""Rack hosts where the machine misbehaves in ways a real one cannot be made to here: a BMC that
does not bring the machine back, a grub that ignores the armed entry, console commands killed
with kbisect. Real sshd in a network namespace, real paramiko, real uploads; the machine's grub,
reboot and IPMI power are FAKES (tests/fake_machine.py) that record what kbisect asked for. A
real rack machine (Debian, GRUB2, Xen from its own disk) is tested in tests/test_rack_vm.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fake_machine import DEFAULT_CMDLINE, DEFAULT_RELEASE, FakeMachine
from kbisect.build.store import Artifact
from kbisect.config.model import Host, Job, RackCommands, SshOptions
from kbisect.deadline import Deadline
from kbisect.errors import InfraError
from kbisect.jobs.runner import run_job
from kbisect.lab.grub import GRUB_SCRIPT
from kbisect.lab.housekeeping import Installed, kept_builds, removal
from kbisect.lab.protocol import BootMismatch, HostBroken, LabPaths
from kbisect.lab.rack import RackHost
from kbisect.lab.ssh import HostKeyUnknown, KnownHosts
from kbisect.processes import pid_alive
from kbisect.results.model import LogKind, ResultStatus
from netns import NetnsLab, SshHost

# Real sshd in network namespaces: seconds a test, so out of the quick loop.
pytestmark = [pytest.mark.needs_root, pytest.mark.slow]

RELEASE = "6.1.192+"
# A host that comes back ends the wait for it at once, so where it does, the boot timeout is
# generous: a loaded machine must not turn a slow boot into a power cycle. Only a test that
# waits out a host that never comes back uses a short one (and nothing else runs against it:
# the install and the power command have bounds of their own).
BOOT_TIMEOUT = 60
NEVER_BACK_TIMEOUT = 5


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rack")


@pytest.fixture(scope="module")
def rack(workdir: Path, ssh_client_key: Path) -> Iterator[tuple[SshHost, FakeMachine]]:
    netns = NetnsLab(workdir / "lab", ssh_client_key.with_name("id_ed25519.pub"))
    machine_dir = workdir / "machine"
    machine_dir.mkdir()
    shim = workdir / "shim-staging"
    shim.mkdir()
    machine = FakeMachine(machine_dir).create(shim)
    try:
        host = netns.add_openssh("rack1", machine=machine_dir)
        for item in shim.iterdir():
            shutil.copy2(item, host.shim_dir / item.name)
        yield host, machine
    finally:
        netns.close()


@pytest.fixture
def machine(rack: tuple[SshHost, FakeMachine]) -> FakeMachine:
    m = rack[1]
    m.set_mode("ok")
    m.set_power("ok")
    m.clear_calls()
    return m


@pytest.fixture(autouse=True)
def consoles_ended() -> Iterator[None]:
    """Every host a test made has its console capture ended by PID afterwards."""
    yield
    while _HOSTS:
        host = _HOSTS.pop()
        pid = host.console.pid if host.console else None
        host.close_console()
        assert pid is None or not pid_alive(pid), f"console capture {pid} still runs"


_HOSTS: list[RackHost] = []


def make_artifact(root: Path, key: str, payload: bytes, release: str = RELEASE) -> Artifact:
    path = root / key
    ko = path / "modules/lib/modules" / release / "kernel/drivers/xen/xen-gntdev.ko"
    ko.parent.mkdir(parents=True)
    ko.write_bytes(b"\x7fELF fake module " + payload)
    (path / "modules/lib/modules" / release / "modules.dep").write_text(
        "kernel/drivers/xen/xen-gntdev.ko:\n"
    )
    (path / "bzImage").write_bytes(b"fake bzImage " + payload * 1000)
    (path / "meta.json").write_text(json.dumps({"kernel_release": release, "profile": "xen-dom0"}))
    return Artifact(key, path)


def rack_host(
    rack: tuple[SshHost, FakeMachine],
    ssh_client_key: Path,
    tmp_path: Path,
    *,
    pin: bool = True,
    boot_timeout: int = BOOT_TIMEOUT,
    keep_kernels: int = 3,
) -> RackHost:
    server, machine = rack
    m = machine.root
    config = Host(
        name="rack1",
        kind="ssh",
        ssh=SshOptions(
            address=server.address,
            port=server.port,
            key=str(ssh_client_key),
            power_cycle=machine.power_command(),
            grub_fallback_entry="debian-known-good",
            xen_image="/boot/xen-4.17-amd64.gz",
            boot_dir=str(m / "boot"),
            modules_dir=str(m / "lib/modules"),
            grub_script=str(m / "grub.d/42_kbisect"),
            grub_dir=str(m / "grub"),
            commands=RackCommands(),
            console=machine.console_command(),
            keep_kernels=keep_kernels,
        ),
        boot_timeout=boot_timeout,
        max_power_cycles=2,
    )
    paths = LabPaths(
        lab_dir=tmp_path / "lab",
        key_path=ssh_client_key,
        public_key="",
        rack_known_hosts=tmp_path / "known_hosts",
    )
    host = RackHost(config, paths)
    _HOSTS.append(host)
    if pin:
        KnownHosts(paths.rack_known_hosts).add(server.address, server.port, server.host_key)
    return host


@pytest.mark.slow  # reboots the machine (waits its boot)
def test_host_that_never_returns_is_broken_for_the_run(
    rack: tuple[SshHost, FakeMachine], machine: FakeMachine, ssh_client_key: Path, tmp_path: Path
) -> None:
    host = rack_host(rack, ssh_client_key, tmp_path, boot_timeout=NEVER_BACK_TIMEOUT)
    machine.set_mode("hang")
    machine.set_power("dead")
    artifact = make_artifact(tmp_path, "dddd4444", b"D")
    with pytest.raises(HostBroken) as broken:
        host.deploy(artifact)
    assert isinstance(broken.value, InfraError) and broken.value.exit_code == 3
    assert "after 2 power cycle(s)" in str(broken.value)
    # the kernel that did not boot left its console: in the error and in the kept log
    assert "Kernel panic - not syncing" in str(broken.value)
    kept = re.search(r"console log kept: (\S+)", str(broken.value))
    assert kept is not None
    console = Path(kept[1]).read_text()
    assert "GRUB: booting 'kbisect-dddd4444'" in console
    assert "Command line: root=/dev/sda1 ro quiet kbisect.build=dddd4444" in console
    assert "Kernel panic - not syncing: VFS: Unable to mount root fs" in console
    assert len(machine.called("power-cycle")) == 2
    assert host.deployment() is None
    machine.clear_calls()
    with pytest.raises(HostBroken, match="marked broken for this run"):
        host.deploy(artifact)
    assert machine.calls() == [], "a broken host gets no more work"


def test_fallback_to_known_good_kernel_is_a_mismatch(
    rack: tuple[SshHost, FakeMachine], machine: FakeMachine, ssh_client_key: Path, tmp_path: Path
) -> None:
    host = rack_host(rack, ssh_client_key, tmp_path)
    machine.set_mode("fallback")
    with pytest.raises(BootMismatch) as mismatch:
        host.deploy(make_artifact(tmp_path, "eeee5555", b"E"))
    message = str(mismatch.value)
    assert "kbisect.build=(none) instead of eeee5555" in message
    assert f"uname -r '{DEFAULT_RELEASE}' instead of '{RELEASE}'" in message
    assert (machine.root / "cmdline").read_text().strip() == DEFAULT_CMDLINE


def test_unknown_host_key_is_refused_before_anything_is_installed(
    rack: tuple[SshHost, FakeMachine], machine: FakeMachine, ssh_client_key: Path, tmp_path: Path
) -> None:
    host = rack_host(rack, ssh_client_key, tmp_path, pin=False)
    with pytest.raises(HostKeyUnknown, match=r"lab\.trust rack1"):
        host.deploy(make_artifact(tmp_path, "ffff6666", b"F"))
    assert machine.calls() == []


def test_lab_trust_pins_the_key_and_lab_status_shows_the_host(
    rack: tuple[SshHost, FakeMachine], ssh_client_key: Path, tmp_path: Path
) -> None:
    server, _ = rack
    root = tmp_path / "project"
    (root / "configs").mkdir(parents=True)
    (root / "configs/lab.yaml").write_text(
        f"hosts:\n  - name: rack1\n    kind: ssh\n    ssh:\n      address: {server.address}\n"
        f"      key: {ssh_client_key}\n"
    )
    env = {**os.environ, "KBISECT_ROOT": str(root), "KBISECT_CACHE": str(tmp_path / "cache")}
    kbisect = [sys.executable, "-m", "kbisect"]
    trust = subprocess.run(
        [*kbisect, "lab.trust", "rack1", "--yes"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert trust.returncode == 0, trust.stderr
    assert server.host_key.fingerprint in trust.stdout
    pinned = KnownHosts(root / "configs/known_hosts").lookup(server.address, 22)
    assert pinned == {"ssh-ed25519": server.host_key}
    status = subprocess.run(
        [*kbisect, "lab.status"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert f"root@{server.address} port 22" in status.stdout
    assert "lease     free" in status.stdout


def console_shows(log: Path, text: str) -> str:
    """The console log once it shows `text`: the capture copies what the machine writes a
    moment later, as a BMC's would."""
    deadline = Deadline(30)
    while True:
        shown = log.read_text(errors="replace") if log.exists() else ""
        if text in shown or deadline.expired:
            return shown
        time.sleep(0.1)


def cmdline_of(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


@pytest.mark.slow  # reboots the machine (waits its boot)
def test_a_deploy_captures_the_console_and_its_command_is_ended_by_pid(
    rack: tuple[SshHost, FakeMachine], machine: FakeMachine, ssh_client_key: Path, tmp_path: Path
) -> None:
    host = rack_host(rack, ssh_client_key, tmp_path)
    done = host.deploy(make_artifact(tmp_path, "abab1212", b"G"))
    log = host.console_log()
    assert log is not None and done.console == str(log)
    text = console_shows(log, "rack1 login:")
    assert "GRUB: booting 'kbisect-abab1212'" in text
    assert "Command line: root=/dev/sda1 ro quiet kbisect.build=abab1212" in text
    assert "rack1 login:" in text
    assert host.console is not None
    pid = host.console.pid
    assert pid is not None and cmdline_of(pid) == machine.console_command()

    # the next deploy starts the log anew; the same capture goes on
    host.deploy(make_artifact(tmp_path, "cdcd3434", b"H"))
    text = console_shows(log, "rack1 login:")
    assert "kbisect.build=cdcd3434" in text and "abab1212" not in text
    assert host.console.pid == pid

    assert host.shutdown() is True
    assert not pid_alive(pid)
    assert not (host.dir / "console.json").exists()
    assert host.shutdown() is False


def test_a_job_on_a_rack_host_keeps_the_console_it_printed(
    rack: tuple[SshHost, FakeMachine], machine: FakeMachine, ssh_client_key: Path, tmp_path: Path
) -> None:
    # The job makes the machine's console show an oops, as a kernel bug under a job would; the
    # runner starts the capture itself (the host was deployed by an earlier command).
    program = tmp_path / "oops.sh"
    program.write_text(
        "#!/bin/sh\n"
        "sleep 1\n"  # the capture follows from the job's start
        'echo "[  42.000000] BUG: unable to handle page fault for address: 0000000000000008" '
        '>> "$1"\n'
        'echo "[  42.000001] Oops: 0000 [#1] PREEMPT SMP NOPTI" >> "$1"\n'
        "sleep 1\n"
        "echo ok\n"
    )
    program.chmod(0o755)
    host = rack_host(rack, ssh_client_key, tmp_path)
    job = Job(name="oops", program=str(program), args=[str(machine.console_file)], timeout=60)
    result = run_job(host, job, 1, program, tmp_path / "cell", print)
    console = result.logs[LogKind.CONSOLE].read_text()
    assert "BUG: unable to handle page fault" in console
    assert result.verdict.status is ResultStatus.FAIL
    assert any(e.source is LogKind.CONSOLE for e in result.verdict.evidence)


def test_a_console_capture_left_by_a_killed_kbisect_is_ended(
    rack: tuple[SshHost, FakeMachine], machine: FakeMachine, ssh_client_key: Path, tmp_path: Path
) -> None:
    host = rack_host(rack, ssh_client_key, tmp_path)
    assert host.console is not None
    dead_owner = subprocess.Popen(["true"])
    dead_owner.wait(timeout=10)
    left = subprocess.Popen(machine.console_command(), stdout=subprocess.DEVNULL)
    try:
        host.console.state.write_text(
            json.dumps(
                {"pid": left.pid, "owner": dead_owner.pid, "argv": machine.console_command()}
            )
        )
        host.open_console()
        assert left.wait(timeout=30) is not None, "the left-behind capture was ended"
        assert host.console.pid not in (None, left.pid)
    finally:
        if left.poll() is None:
            left.kill()
            left.wait(timeout=10)


def test_housekeeping_keeps_the_newest_and_the_running_build() -> None:
    installed = Installed(
        builds=("e5", "d4", "c3", "b2", "a1"),
        module_trees={"6.1.9+": "e5", "6.1.8+": "a1", "6.1.7+": "b2"},
    )
    kept = kept_builds(installed, keep=3, installing="f6", booted="a1")
    assert kept == {"f6", "e5", "d4", "a1"}
    gone = removal(
        installed, kept, boot_dir="/boot", modules_dir="/lib/modules", running_release="6.1.7+"
    )
    assert gone.files == (
        "/boot/vmlinuz-kbisect-c3",
        "/boot/initrd.img-kbisect-c3",
        "/boot/vmlinuz-kbisect-b2",
        "/boot/initrd.img-kbisect-b2",
    )
    assert gone.trees == (), "a1's tree is kept (it runs), 6.1.7+ is the running release"
    # lab.clean --kernels: nothing kept but what runs
    assert kept_builds(installed, keep=0, installing=None, booted=None) == set()
    assert kept_builds(installed, keep=0, installing=None, booted="c3") == {"c3"}


def test_housekeeping_reads_only_kbisect_names() -> None:
    listing = (
        "boot vmlinuz-kbisect-bb22\n"
        "boot initrd.img-kbisect-bb22\n"
        "boot initrd.img-kbisect-aa11\n"
        "boot vmlinuz-kbisect-../etc\n"
        "boot vmlinuz-6.1.0-13-amd64\n"
        "modules 6.1.5+ aa11\n"
        "modules ../x aa11\n"
    )
    installed = Installed.parse(listing)
    assert installed.builds == ("bb22", "aa11")
    assert installed.module_trees == {"6.1.5+": "aa11"}


@pytest.mark.slow  # reboots the machine (waits its boot) three times
def test_deploys_remove_old_kbisect_builds_but_the_running_one_and_foreign_files(
    rack: tuple[SshHost, FakeMachine], machine: FakeMachine, ssh_client_key: Path, tmp_path: Path
) -> None:
    boot, modules = machine.root / "boot", machine.root / "lib/modules"
    for stale in boot.glob("*kbisect*"):
        stale.unlink()
    for release in (RELEASE, "6.1.190+", "6.1.191+"):
        shutil.rmtree(modules / release, ignore_errors=True)
    foreign = [boot / f"vmlinuz-{DEFAULT_RELEASE}", boot / f"initrd.img-{DEFAULT_RELEASE}"]
    for path in foreign:
        path.write_text("the distribution's\n")
    (modules / DEFAULT_RELEASE / "kernel").mkdir(parents=True, exist_ok=True)
    (modules / "6.1.5+").mkdir(exist_ok=True)  # same kind of name as kbisect's, but unmarked
    # keep 1: after N + 2 = 3 deploys, the newest and the one running when it was installed
    host = rack_host(rack, ssh_client_key, tmp_path, keep_kernels=1)
    for key, release in (("a1a1", "6.1.190+"), ("b2b2", "6.1.191+"), ("c3c3", RELEASE)):
        host.deploy(make_artifact(tmp_path, key, key.encode(), release))
    assert sorted(p.name for p in boot.glob("*kbisect*")) == [
        "initrd.img-kbisect-b2b2",
        "initrd.img-kbisect-c3c3",
        "vmlinuz-kbisect-b2b2",
        "vmlinuz-kbisect-c3c3",
    ]
    assert all(path.read_text() == "the distribution's\n" for path in foreign)
    assert (modules / DEFAULT_RELEASE / "kernel").is_dir() and (modules / "6.1.5+").is_dir()
    assert not (modules / "6.1.190+").exists(), "the module tree of the removed build"
    assert (modules / "6.1.191+" / "kbisect.build").read_text() == "b2b2\n"
    assert (modules / RELEASE / "kbisect.build").read_text() == "c3c3\n"


def test_lab_clean_removes_the_grub_entry_and_kbisect_builds_but_the_running_one(
    rack: tuple[SshHost, FakeMachine], machine: FakeMachine, ssh_client_key: Path, tmp_path: Path
) -> None:
    server, _ = rack
    m = machine.root
    boot, modules, script = m / "boot", m / "lib/modules", m / "grub.d/42_kbisect"
    entries = m / "grub/kbisect.cfg"
    # what earlier deploys left: an entry, an old build, and the build the machine runs now
    script.write_text(GRUB_SCRIPT)
    entries.parent.mkdir(exist_ok=True)
    entries.write_text("menuentry 'kbisect run2' --id kbisect-run2 {\n}\n")
    for key, release in (("old1", "6.1.180+"), ("run2", "6.1.181+")):
        for name in (f"vmlinuz-kbisect-{key}", f"initrd.img-kbisect-{key}"):
            (boot / name).write_text(key)
        (modules / release).mkdir(exist_ok=True)
        (modules / release / "kbisect.build").write_text(key + "\n")
    foreign = boot / f"vmlinuz-{DEFAULT_RELEASE}"
    foreign.write_text("the distribution's\n")
    (m / "cmdline").write_text("root=/dev/sda1 ro kbisect.build=run2\n")
    (m / "release").write_text("6.1.181+\n")
    root = tmp_path / "project"
    (root / "configs").mkdir(parents=True)
    (root / "configs/lab.yaml").write_text(
        "hosts:\n  - name: rack1\n    kind: ssh\n    ssh:\n"
        f"      address: {server.address}\n      key: {ssh_client_key}\n"
        f"      boot_dir: {boot}\n      modules_dir: {modules}\n      grub_script: {script}\n"
        f"      grub_dir: {entries.parent}\n"
    )
    KnownHosts(root / "configs/known_hosts").add(server.address, 22, server.host_key)
    env = {**os.environ, "KBISECT_ROOT": str(root), "KBISECT_CACHE": str(tmp_path / "cache")}
    clean = [sys.executable, "-m", "kbisect", "lab.clean", "rack1"]
    try:
        first = subprocess.run(
            [*clean, "--kernels"], capture_output=True, text=True, env=env, timeout=120, check=False
        )
        assert first.returncode == 0, first.stderr
        assert f"rack1: removed grub entry ({script})" in first.stdout
        assert not script.exists() and not entries.exists()
        assert machine.called("update-grub") == [[]]
        assert "kbisect" not in (m / "grub.cfg").read_text()
        assert sorted(p.name for p in boot.glob("*kbisect*")) == [
            "initrd.img-kbisect-run2",
            "vmlinuz-kbisect-run2",
        ]
        assert not (modules / "6.1.180+").exists() and (modules / "6.1.181+").is_dir()
        assert foreign.read_text() == "the distribution's\n"
        assert f"removed {boot}/vmlinuz-kbisect-old1" in first.stdout

        again = subprocess.run(clean, capture_output=True, text=True, env=env, timeout=120)
        assert again.returncode == 0, again.stderr
        assert "rack1: no grub entry" in again.stdout
        assert machine.called("update-grub") == [[]], "nothing to regenerate"
    finally:
        machine.boot()  # back on its own kernel for the tests after this one
