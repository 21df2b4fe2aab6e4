"""The rack path against a real machine: a Debian 12 virtual machine that boots Xen through GRUB2
from its own disk (kbisect.lab.machine), reached and deployed to exactly as hardware is (kind
ssh), switched and power-cycled by `kbisect lab.power`, its serial console captured by `kbisect
lab.console`.

Every boot costs one to two minutes under TCG, so the module's tests share one machine and one
nightly, and walk, in file order: switch on -> trust -> the four variants on both hosts (one
nightly; the rack machine deploys each build through grub) -> the last deploy left the machine as
a one-shot boot should -> a plain reboot falls back -> a kernel that hangs is power-cycled back
to the fallback and FAILs -> the machine is healthy afterwards.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from junitparser import JUnitXml

from conftest import REPO, VARIANTS
from kbisect.build.store import Artifact
from kbisect.config import Project, load_project
from kbisect.deadline import Deadline
from kbisect.errors import InfraError
from kbisect.lab.lab import Lab
from kbisect.lab.machine.vm import Power, VirtualMachine
from kbisect.lab.probe import LOADING_MARK, Probe
from kbisect.lab.protocol import LabHost
from kbisect.lab.qemu import standby_wanted
from kbisect.lab.rack import RackHost
from kbisect.lab.ssh import (
    HostKeyChanged,
    HostKeyUnknown,
    KnownHosts,
    fetch_host_key,
    generate_keypair,
    load_private_key,
)
from kbisect.results.model import ResultStatus
from kbisect.results.store import ResultsStore

pytestmark = [pytest.mark.vm, pytest.mark.needs_root]

HOST = "rack-vm"
BOOT_SECONDS = 420.0  # a boot to SSH takes one to two minutes here; under load, more
GUP = {"odirect-read", "odirect-write", "io-submit", "vmsplice", "process-vm-readv",
       "proc-pid-mem", "move-pages"}  # fmt: skip


def kbisect(root: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KBISECT_ROOT": str(root)}
    done = subprocess.run(
        [sys.executable, "-m", "kbisect", *args],
        capture_output=True, text=True, env=env, timeout=timeout, check=False,
    )  # fmt: skip
    print(f"$ kbisect {' '.join(args)}\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return done


def copy_project(root: Path) -> Path:
    """The repository's configuration in a directory of its own (lab.trust writes there)."""
    shutil.copytree(REPO / "configs", root / "configs", ignore=shutil.ignore_patterns("known_*"))
    for part in ("seeds", "pipelines"):
        (root / part).symlink_to(REPO / part)
    return root


@pytest.fixture(scope="module")
def rack_project(real_project: Project, tmp_path_factory: pytest.TempPathFactory) -> Project:
    return load_project(copy_project(tmp_path_factory.mktemp("rack-project")))


@pytest.fixture(scope="module")
def rack_vm(rack_project: Project) -> Iterator[VirtualMachine]:
    """The machine, switched on with a new disk (its image built first if the cache has none);
    switched off after the module."""
    on = kbisect(rack_project.root, "lab.power", HOST, "on", "--fresh", timeout=2400)
    assert on.returncode == 0, on.stderr
    with Lab(rack_project, keep_up=True) as lab:
        vm = lab.machine(HOST)
    try:
        yield vm
    finally:
        off = kbisect(rack_project.root, "lab.power", HOST, "off")
        assert off.returncode == 0 and vm.status() is Power.OFF


def wait_for_sshd(port: int, seconds: float) -> None:
    deadline = Deadline(seconds)
    while True:
        try:
            fetch_host_key("127.0.0.1", port, Deadline(10))
            return
        except InfraError:
            if deadline.expired:
                raise
            time.sleep(3)


def probe_after_reboot(host: LabHost, previous: str) -> Probe:
    """What the host runs once it answers with a boot id other than `previous`."""
    deadline = Deadline(BOOT_SECONDS)
    while True:
        with host.connect(deadline) as session:
            probe = host.probe(session)
        if probe.get("boot_id") != previous:
            return probe
        time.sleep(3)


@dataclasses.dataclass(frozen=True)
class Nightly:
    done: subprocess.CompletedProcess[str]
    results: Path


@pytest.fixture(scope="module")
def two_hosts_nightly(
    rack_project: Project, rack_vm: VirtualMachine, tmp_path_factory: pytest.TempPathFactory
) -> Nightly:
    """The `two-hosts` nightly, once for the module: each variant's build on the embedded host
    and, deployed through grub, on the rack machine (a deploy is two to four minutes here)."""
    results = tmp_path_factory.mktemp("two-hosts") / "results"
    os.environ["KBISECT_RESULTS"] = str(results)
    try:
        done = kbisect(rack_project.root, "nightly", "--pipeline", "two-hosts", timeout=3600)
    finally:
        del os.environ["KBISECT_RESULTS"]
    return Nightly(done, results)


def test_power_status_and_trust_pin_the_machines_key(
    rack_project: Project, rack_vm: VirtualMachine
) -> None:
    status = kbisect(rack_project.root, "lab.power", HOST, "status")
    assert status.returncode == 0 and f"{HOST}: on for" in status.stdout
    assert "127.0.0.1 port 10022" in status.stdout
    wait_for_sshd(rack_vm.port, BOOT_SECONDS)
    with Lab(rack_project, keep_up=True) as lab:
        host = lab.host(HOST)
        with pytest.raises(HostKeyUnknown):
            host.connect(Deadline(30)).close()
    trusted = kbisect(rack_project.root, "lab.trust", HOST, "--yes")
    assert trusted.returncode == 0, trusted.stderr
    assert "offers ssh-ed25519 SHA256:" in trusted.stdout
    pinned = rack_project.configs_dir / "known_hosts"
    assert "[127.0.0.1]:10022 ssh-ed25519 " in pinned.read_text()

    with Lab(rack_project, keep_up=True) as lab:
        host = lab.host(HOST)
        with host.connect(Deadline(BOOT_SECONDS)) as session:  # the seed disk's key works
            probe = host.probe(session)
        # another key pinned for the same address and port is refused
        other = rack_project.root / "other_known_hosts"
        generate_keypair(rack_project.root / "forged", comment="forged")
        forged = load_private_key(rack_project.root / "forged")
        KnownHosts(other).add("127.0.0.1", rack_vm.port, forged)
        impostor = RackHost(host.config, dataclasses.replace(lab.paths, rack_known_hosts=other))
        with pytest.raises(HostKeyChanged):
            impostor.connect(Deadline(30)).close()
    # Debian's own kernel under Xen, with the embedded host's NUMA set-up
    assert probe.get("hypervisor") == "xen" and probe.build is None
    assert probe.get("numa_nodes") == "2"
    assert "numa=fake=2" in probe.get("dom0_cmdline")


def test_four_variants_on_both_hosts_agree(
    rack_project: Project, dom0_builds: dict[str, Artifact], two_hosts_nightly: Nightly
) -> None:
    done, results = two_hosts_nightly.done, two_hosts_nightly.results
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # where the machine has cores to spare, each embedded cell after the first booted on the
    # standby QEMU while the one before it ran
    staged = standby_wanted(rack_project.hosts["qemu"].qemu_options())
    assert done.stdout.count("booted on standby") == (3 if staged else 0)
    with ResultsStore(results) as store:
        run = store.runs()[0]
        cells = store.cells(run.id)
        changes = store.changes(run.id)
    assert {c.change for c in changes} == {"NEW"}, "a first nightly has no baseline"
    by = {(c.host, c.variant.split("/")[-1]): c for c in cells}
    assert sorted(by) == sorted((h, v) for h in ("qemu", HOST) for v in VARIANTS)
    # the hosts agree on every subtest the experiment expects to pass or to fail; one it
    # records as flaky (none's churn: the NUMA scanner reaches it now and then) may differ
    expected = {v.name: v.expect for v in rack_project.experiments["gntdev-numa"].variants}
    for variant in VARIANTS:
        flaky = {name for name, verdict in expected[variant].items() if verdict == "flaky"}
        signatures = []
        for host in ("qemu", HOST):
            cell = by[(host, variant)]
            assert cell.build_key == dom0_builds[variant].key, "one build for both hosts"
            failing = {s.name for s in cell.subtests if s.status is ResultStatus.FAIL}
            signatures.append(failing - flaky)
        assert signatures[0] == signatures[1], (variant, signatures)
    assert {s.name for s in by[(HOST, "vm-io")].subtests if s.status is ResultStatus.FAIL} == GUP
    none = {s.name: s.status for s in by[(HOST, "none")].subtests}
    assert none["numa-soak"] is ResultStatus.FAIL
    assert all(s.status is ResultStatus.PASS for s in by[(HOST, "vm-mixedmap")].subtests)
    # get_policy hands the mbind()ed MPOL_F_MOF policy to the NUMA scanner (issue 21)
    mempolicy = {s.name for s in by[(HOST, "mempolicy")].subtests if s.status is ResultStatus.FAIL}
    assert mempolicy == {"mbind-soak"}
    key = dom0_builds["none"].key
    assert by[(HOST, "none")].fingerprint["boot"] == f"grub2 one-shot 'kbisect-{key}'"
    assert by[("qemu", "none")].fingerprint["boot"].startswith("QEMU -kernel")
    # the summary names the host of each cell; the JUnit says how each was booted
    summary = (results / "runs" / str(run.id) / "summary.txt").read_text()
    assert summary.count("variants at ") == 2, "a table per host"
    for host in ("qemu", HOST):
        at = summary.index(f") on {host}\n")
        table = summary[summary.rindex("variants at ", 0, at) :].split("\n\n")[0].splitlines()
        assert sorted(table[1].split()[1:]) == sorted(VARIANTS)
        row = {line.split()[0]: line for line in table[2:]}
        assert "FAIL" in row["odirect-read"] and "FAIL" in row["numa-soak"]
        assert "FAIL" not in row["self-map"]
    xml = JUnitXml.fromfile(str(results / "runs" / str(run.id) / "junit.xml"))
    boots = {p.value for suite in xml for p in suite.properties() if p.name == "host.boot"}
    assert any(b.startswith("grub2 one-shot 'kbisect-") for b in boots), boots
    assert any(b.startswith("QEMU -kernel") for b in boots), boots


def test_the_last_deploy_booted_its_build_once_through_grub(
    rack_project: Project, dom0_builds: dict[str, Artifact], two_hosts_nightly: Nightly
) -> None:
    """The rack machine's last cell of the nightly: its build is installed beside Debian's
    kernels, grub booted its one-shot entry without a power cycle, and the saved default is the
    fallback again."""
    assert two_hosts_nightly.done.returncode == 0
    with ResultsStore(two_hosts_nightly.results) as store:
        cells = store.cells(store.runs()[0].id)
    last = max((c for c in cells if c.host == HOST), key=lambda c: str(c.finished))
    artifact = dom0_builds[last.variant.split("/")[-1]]
    assert last.build_key == artifact.key
    release = str(artifact.meta["kernel_release"])
    with Lab(rack_project, keep_up=True) as lab:
        host = lab.host(HOST)
        with host.connect(Deadline(60)) as session:
            probe = host.probe(session)
            env = session.run(["grub-editenv", "/boot/grub/grubenv", "list"], Deadline(30))
            files = session.run_shell(
                f"ls /boot/vmlinuz-kbisect-{artifact.key} /boot/initrd.img-kbisect-{artifact.key}"
                f" && cat /lib/modules/{release}/kbisect.build && cat /boot/grub/kbisect.cfg",
                Deadline(30),
            )
        console = host.console_log()
    assert probe.build == artifact.key and probe.get("release") == release
    output = two_hosts_nightly.done.stdout + two_hosts_nightly.done.stderr
    assert f"{HOST}: not back" not in output, "booted without a power cycle"
    fp = last.fingerprint
    assert fp["boot"] == f"grub2 one-shot 'kbisect-{artifact.key}'"
    assert fp["hypervisor"] == "xen" and fp["numa_nodes"] == "2"
    assert f"kbisect.build={artifact.key}" in fp["dom0_cmdline"]
    assert "numa=fake=2" in fp["dom0_cmdline"], "the running command line carried over"
    assert files.ok, files.stderr
    assert f"--id kbisect-{artifact.key} {{" in files.text()
    assert files.text().splitlines()[2] == artifact.key
    # grub used the one-shot entry up; the saved default is the fallback
    grubenv = env.text()
    assert "next_entry=\n" in grubenv or "next_entry" not in grubenv
    assert "saved_entry=Debian GNU/Linux, with Xen hypervisor" in grubenv
    assert console is not None and f"{LOADING_MARK} {artifact.key}" in console.read_text()


def test_a_plain_reboot_comes_back_on_the_fallback(
    rack_project: Project, two_hosts_nightly: Nightly
) -> None:
    with Lab(rack_project, keep_up=True) as lab:
        host = lab.host(HOST)
        with host.connect(Deadline(60)) as session:
            before = host.probe(session)
            assert before.build is not None, "runs a kbisect build before the reboot"
            kernels = session.run_shell("ls /boot | grep -c '^vmlinuz-kbisect-'", Deadline(30))
            # newer than grub.cfg: the deploys after the first wrote the entry, not update-grub
            newer = ["find", "/boot/grub", "-newer", "/boot/grub/grub.cfg"]
            fresh = session.run(newer, Deadline(30))
            session.run(["systemctl", "reboot"], Deadline(30))
        after = probe_after_reboot(host, before.get("boot_id"))
    # four builds were deployed (vm-mixedmap first): the host keeps the newest three
    assert kernels.text().strip() == "3"
    assert "/boot/grub/kbisect.cfg" in fresh.text().split()
    assert after.build is None, "the one-shot entry was used once only"
    assert after.get("release").endswith("-amd64"), "Debian's kernel, the fallback entry"
    assert after.get("hypervisor") == "xen"


def test_a_kernel_that_hangs_is_power_cycled_back_and_fails(
    rack_project: Project,
    rack_vm: VirtualMachine,
    dom0_builds: dict[str, Artifact],
    debian_tree: tuple[object, list[str]],
    tmp_path: Path,
) -> None:
    """The build's kernel waits forever for a root device that does not exist (no initrd, root=
    /dev/nowhere, rootwait): no SSH within boot_timeout, a power cycle through `lab.power`,
    grub falls back to Debian's kernel, and the cell is a FAIL "kernel did not boot" with the
    console; the host is not broken."""
    hang = copy_project(tmp_path / "hang")
    shutil.copyfile(rack_project.configs_dir / "known_hosts", hang / "configs/known_hosts")
    lab_yaml = hang / "configs/lab.yaml"
    text = lab_yaml.read_text()
    text = text.replace(
        "      power_cycle: [kbisect, lab.power, rack-vm, cycle]\n",
        "      power_cycle: [kbisect, lab.power, rack-vm, cycle]\n"
        "      dom0_cmdline: root=/dev/nowhere rootwait ro console=hvc0 earlyprintk=xen\n"
        "      commands: {initrd: null}\n",
    ).replace("    boot_timeout: 600\n", "    boot_timeout: 150\n")  # the hang shows at ~30 s
    assert "dom0_cmdline: root=/dev/nowhere" in text and "boot_timeout: 150" in text
    lab_yaml.write_text(text)
    results = tmp_path / "results"
    os.environ["KBISECT_RESULTS"] = str(results)
    try:
        done = kbisect(
            hang, "run", "--tree", "debian-6.1", "--rev", debian_tree[1][-1],
            "--variant", "vm-io", "--job", "gntstress", "--host", HOST, "--json", timeout=2400,
        )  # fmt: skip
    finally:
        del os.environ["KBISECT_RESULTS"]
    assert done.returncode == 1, done.stderr[-3000:]
    document = json.loads(done.stdout)
    assert document["exit_code"] == 1
    with ResultsStore(results) as store:
        cell = store.cells(store.runs()[0].id)[0]
    assert cell.status is ResultStatus.FAIL
    assert cell.reason.startswith("kernel did not boot"), cell.reason
    assert [(s.name, s.status) for s in cell.subtests] == [("boot", ResultStatus.FAIL)]
    console = next(results / log.path for log in cell.logs if log.kind.value == "console")
    text = console.read_text(errors="replace")
    assert f"{LOADING_MARK} {dom0_builds['vm-io'].key}" in text
    assert "Waiting for root device /dev/nowhere" in text
    assert "power cycle 1/2" in done.stderr
    # the host is fine: back on its fallback kernel, answering
    with Lab(rack_project, keep_up=True) as lab:
        host = lab.host(HOST)
        assert host.broken is None
        with host.connect(Deadline(BOOT_SECONDS)) as session:
            probe = host.probe(session)
    assert probe.build is None and probe.get("hypervisor") == "xen"
