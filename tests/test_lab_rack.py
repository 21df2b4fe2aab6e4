"""Rack hosts: real sshd in a network namespace, real paramiko, real uploads and grub.d script;
the machine's grub, reboot and IPMI power are FAKES (tests/fake_machine.py) that record what
kbisect asked for."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fake_machine import DEFAULT_CMDLINE, DEFAULT_RELEASE, FakeMachine
from kbisect.build.store import Artifact
from kbisect.config.model import Host, RackCommands, SshOptions
from kbisect.errors import InfraError
from kbisect.lab.protocol import BootMismatch, HostBroken, LabPaths
from kbisect.lab.rack import RackHost
from kbisect.lab.ssh import HostKeyUnknown, KnownHosts
from netns import NetnsLab, SshHost

pytestmark = pytest.mark.needs_root  # network namespaces and sshd in them

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


def make_artifact(root: Path, key: str, payload: bytes) -> Artifact:
    path = root / key
    ko = path / "modules/lib/modules" / RELEASE / "kernel/drivers/xen/xen-gntdev.ko"
    ko.parent.mkdir(parents=True)
    ko.write_bytes(b"\x7fELF fake module " + payload)
    (path / "modules/lib/modules" / RELEASE / "modules.dep").write_text(
        "kernel/drivers/xen/xen-gntdev.ko:\n"
    )
    (path / "bzImage").write_bytes(b"fake bzImage " + payload * 1000)
    (path / "meta.json").write_text(json.dumps({"kernel_release": RELEASE, "profile": "xen-dom0"}))
    return Artifact(key, path)


def rack_host(
    rack: tuple[SshHost, FakeMachine],
    ssh_client_key: Path,
    tmp_path: Path,
    *,
    pin: bool = True,
    boot_timeout: int = BOOT_TIMEOUT,
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
            commands=RackCommands(),
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
    if pin:
        KnownHosts(paths.rack_known_hosts).add(server.address, server.port, server.host_key)
    return host


@pytest.mark.slow  # reboots the machine (waits its boot)
def test_deploy_installs_arms_grub_once_reboots_and_verifies(
    rack: tuple[SshHost, FakeMachine], machine: FakeMachine, ssh_client_key: Path, tmp_path: Path
) -> None:
    host = rack_host(rack, ssh_client_key, tmp_path)
    first = make_artifact(tmp_path, "aaaa1111", b"A")
    before = machine.boot_id
    done = host.deploy(first)

    assert done.build_key == "aaaa1111" and done.power_cycles == 0
    assert done.release == RELEASE and done.boot_id != before
    boot = machine.root / "boot"
    assert (boot / "vmlinuz-kbisect-aaaa1111").read_bytes() == first.bzimage.read_bytes()
    installed = machine.root / "lib/modules" / RELEASE / "kernel/drivers/xen/xen-gntdev.ko"
    assert installed.read_bytes().endswith(b"A")
    # what the fake firmware was asked, in order
    assert [argv[0] for argv in machine.calls()] == [
        "mkinitramfs",
        "update-grub",
        "grub-set-default",
        "grub-reboot",
        "reboot",
    ]
    assert machine.called("mkinitramfs") == [
        ["-o", str(boot / "initrd.img-kbisect-aaaa1111"), RELEASE]
    ]
    assert machine.called("grub-set-default") == [["debian-known-good"]]
    assert machine.called("grub-reboot") == [["kbisect-aaaa1111"]]
    # the entry update-grub produced from kbisect's grub.d script
    cfg = (machine.root / "grub.cfg").read_text()
    assert "--id kbisect-aaaa1111 {" in cfg
    assert "\tmultiboot2 /boot/xen-4.17-amd64.gz loglvl=all guest_loglvl=all\n" in cfg
    kernel_line = next(
        ln for ln in cfg.splitlines() if ln.startswith("\tmodule2 ") and "vmlinuz" in ln
    )
    assert kernel_line.split()[2:] == [
        "root=/dev/sda1",
        "ro",
        "quiet",
        "kbisect.build=aaaa1111",
    ], "the running command line minus BOOT_IMAGE, plus the build identity"
    assert f"module2 --nounzip {boot}/initrd.img-kbisect-aaaa1111" in cfg
    fp = done.fingerprint
    assert fp["hypervisor"] == "xen" and fp["xen_version"] == "4.17.2"
    assert fp["numa_nodes"] == "2" and fp["dom0_release"] == RELEASE
    assert "kbisect.build=aaaa1111" in fp["dom0_cmdline"]
    assert host.deployment() == done

    # the next build replaces the previous one in /boot
    second = make_artifact(tmp_path, "bbbb2222", b"B")
    again = host.deploy(second)
    assert again.boot_id != done.boot_id
    assert sorted(p.name for p in boot.iterdir()) == [
        "initrd.img-kbisect-bbbb2222",
        "vmlinuz-kbisect-bbbb2222",
    ]
    assert installed.read_bytes().endswith(b"B")


@pytest.mark.slow  # reboots the machine (waits its boot)
def test_host_that_hangs_is_power_cycled_then_verified(
    rack: tuple[SshHost, FakeMachine], machine: FakeMachine, ssh_client_key: Path, tmp_path: Path
) -> None:
    # The first wait is waited out (the reboot hangs); the power cycle boots the machine at once,
    # so the second wait ends with the first login.
    host = rack_host(rack, ssh_client_key, tmp_path, boot_timeout=NEVER_BACK_TIMEOUT)
    machine.set_mode("hang")
    done = host.deploy(make_artifact(tmp_path, "cccc3333", b"C"))
    assert done.power_cycles == 1
    assert len(machine.called("power-cycle")) == 1
    assert done.fingerprint["dom0_cmdline"].endswith("kbisect.build=cccc3333")


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
