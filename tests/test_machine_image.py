"""The emulated rack machine's parts that need no VM: the disk layout (real mke2fs, sfdisk and
debugfs on a small root tree), the recipe's hash, the customize hook, the console follower and
the power task's refusals. The machine itself boots in tests/test_rack_vm.py."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers import require_program
from kbisect.cli.machine_tasks import follow
from kbisect.config.model import EmulatedMachine
from kbisect.deadline import Deadline
from kbisect.lab.machine.disk import (
    BOOT_CODE_BYTES,
    PARTITION_START,
    SECTOR,
    SEED_LABEL,
    DiskLayout,
    make_disk,
    seed_disk,
)
from kbisect.lab.machine.image import ImageRecipe, _customize_script

MIB = 1 << 20


def test_a_root_tree_becomes_a_partitioned_bootable_sparse_disk(tmp_path: Path) -> None:
    for program in ("mke2fs", "sfdisk", "debugfs"):
        require_program(program, "e2fsprogs and fdisk (./bootstrap installs them)")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/hostname").write_text("kbisect-rack\n")
    boot_sector = tmp_path / "boot.img"
    boot_sector.write_bytes(bytes(range(256)) * 2)  # 512 bytes; only 440 may be written
    core = tmp_path / "core.img"
    core.write_bytes(b"GRUB core " * 3000)
    disk = tmp_path / "disk.img"
    uuid = "12345678-1234-1234-1234-123456789abc"
    layout = DiskLayout(root, "kbroot", uuid, 64 * MIB, boot_sector, core)

    make_disk(layout, disk, tmp_path)

    data = disk.read_bytes()
    assert len(data) == 64 * MIB
    assert disk.stat().st_blocks * 512 < 16 * MIB, "holes where the file system is empty"
    assert data[:BOOT_CODE_BYTES] == boot_sector.read_bytes()[:BOOT_CODE_BYTES]
    assert data[SECTOR : SECTOR + core.stat().st_size] == core.read_bytes()
    entry = data[446:462]  # the first partition: bootable, Linux, from 1 MiB to the end
    assert entry[0] == 0x80 and entry[4] == 0x83
    assert int.from_bytes(entry[8:12], "little") == PARTITION_START
    assert int.from_bytes(entry[12:16], "little") == 64 * MIB // SECTOR - PARTITION_START
    assert data[510:512] == b"\x55\xaa"
    offset = PARTITION_START * SECTOR
    assert data[offset + 1024 + 56 : offset + 1024 + 58] == b"\x53\xef", "ext4's magic"
    read = subprocess.run(
        ["debugfs", "-R", "cat /etc/hostname", f"{disk}?offset={offset}"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert read.stdout == "kbisect-rack\n"
    stat = subprocess.run(
        ["debugfs", "-R", "stat /etc/hostname", f"{disk}?offset={offset}"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert "User:     0   Group:     0" in stat.stdout, "owned by root, whoever built it"
    blkid = subprocess.run(
        ["blkid", "-p", "-O", str(offset), "-o", "export", str(disk)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert f"UUID={uuid}" in blkid.stdout and "LABEL=kbroot" in blkid.stdout


def test_a_core_image_too_large_for_the_gap_is_refused(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    core = tmp_path / "core.img"
    core.write_bytes(bytes(PARTITION_START * SECTOR))
    boot = tmp_path / "boot.img"
    boot.write_bytes(bytes(SECTOR))
    layout = DiskLayout(tmp_path / "root", "x", "", 8 * MIB, boot, core)
    with pytest.raises(Exception, match="larger than"):
        make_disk(layout, tmp_path / "disk.img", tmp_path)
    assert not (tmp_path / "disk.img").exists(), "nothing half-written"


def test_the_seed_disk_carries_the_key_under_its_label(tmp_path: Path) -> None:
    require_program("debugfs", "e2fsprogs")
    seed = tmp_path / "seed.img"
    seed_disk({"authorized_keys": b"ssh-ed25519 AAAA lab\n"}, seed, tmp_path)
    blkid = subprocess.run(
        ["blkid", "-p", "-o", "export", str(seed)], capture_output=True, text=True, timeout=60
    )
    assert f"LABEL={SEED_LABEL}" in blkid.stdout
    read = subprocess.run(
        ["debugfs", "-R", "cat /authorized_keys", str(seed)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert read.stdout == "ssh-ed25519 AAAA lab\n"


def test_the_recipe_hash_follows_what_goes_into_the_image() -> None:
    base = ImageRecipe.of(EmulatedMachine())
    assert base.key == ImageRecipe.of(EmulatedMachine()).key
    assert base.root_uuid == ImageRecipe.of(EmulatedMachine()).root_uuid
    changed = [
        EmulatedMachine(dom0_cmdline="numa=fake=4"),
        EmulatedMachine(extra_packages=["strace"]),
        EmulatedMachine(disk_gb=8),
        EmulatedMachine(dom0_memory_mb=1536),
        EmulatedMachine(suite="trixie"),
    ]
    keys = {ImageRecipe.of(m).key for m in changed}
    assert base.key not in keys and len(keys) == len(changed)
    # memory and CPUs are the VM's, not the image's: one image serves both sizes
    assert ImageRecipe.of(EmulatedMachine(memory_mb=4096, cpus=4)).key == base.key
    newer = dataclasses.replace(base, version=base.version + 1)
    assert newer.key != base.key


def test_the_customize_hook_makes_grub_boot_the_saved_entry_on_the_serial_console() -> None:
    recipe = ImageRecipe.of(EmulatedMachine(dom0_memory_mb=900, dom0_cmdline="numa=fake=2"))
    script = _customize_script("UUID-X", recipe)
    assert "GRUB_DEFAULT=saved" in script and "XEN_OVERRIDE_GRUB_DEFAULT=0" in script
    assert 'GRUB_CMDLINE_XEN="com1=115200,8n1 console=com1 dom0_mem=900M,max:900M' in script
    assert 'GRUB_CMDLINE_LINUX_XEN_REPLACE="console=hvc0 earlyprintk=xen numa=fake=2"' in script
    assert "UUID=UUID-X / ext4" in script
    assert 'grub-set-default "$title"' in script
    # the stand-in grub-probe is the real one again afterwards
    assert script.index('grub-probe.real" "$R/usr/sbin/grub-probe"') > script.index("grub-mkconfig")
    done = subprocess.run(["sh", "-n"], input=script, text=True, timeout=30, check=False)
    assert done.returncode == 0, "valid sh"


def test_the_console_follower_prints_what_is_appended_and_a_restarted_log(
    tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    log = tmp_path / "console.log"
    log.write_bytes(b"before the follower\n")

    def machine() -> None:
        time.sleep(0.5)
        with log.open("ab") as f:
            f.write(b"GRUB loading\n")
        time.sleep(0.5)
        log.write_bytes(b"power on again\n")  # QEMU started anew: the file starts over

    writer = threading.Thread(target=machine)
    writer.start()
    follow(log, Deadline(2.5), from_start=False)
    writer.join()
    out = capfdbinary.readouterr().out
    assert out == b"GRUB loading\npower on again\n"


def test_power_refuses_a_host_that_is_not_a_machine_and_a_bad_action(tmp_path: Path) -> None:
    env = {**os.environ, "KBISECT_ROOT": str(Path(__file__).resolve().parent.parent)}
    env["KBISECT_CACHE"] = str(tmp_path / "cache")
    for args, message in (
        (["qemu", "status"], "qemu is not an emulated machine"),
        (["rack-vm", "sideways"], "expected one of on, off, cycle, status"),
        (["rack-vm", "off", "--fresh"], "--fresh goes with `on`"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "kbisect", "lab.power", *args],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    status = subprocess.run(
        [sys.executable, "-m", "kbisect", "lab.power", "rack-vm", "status"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert status.returncode == 0 and status.stdout.strip() == "rack-vm: off"


def test_the_two_hosts_pipeline_is_the_nightly_on_both_hosts(tmp_path: Path) -> None:
    """pipelines/two-hosts.yaml plans the shipped nightly's newest release, once per cell, on the
    embedded host and the rack machine (tests/test_rack_vm.py runs it)."""
    env = {**os.environ, "KBISECT_ROOT": str(Path(__file__).resolve().parent.parent)}
    env["KBISECT_CACHE"] = str(tmp_path / "cache")
    plans = {}
    for pipeline in ("nightly", "two-hosts"):
        done = subprocess.run(
            [sys.executable, "-m", "kbisect", "nightly", "--pipeline", pipeline, "--dry-run"],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        plans[pipeline] = done.stdout
    assert "hosts      qemu\n" in plans["nightly"] and "repeat     3\n" in plans["nightly"]
    two = plans["two-hosts"]
    assert "hosts      qemu, rack-vm\n" in two and "repeat     1\n" in two
    for line in plans["nightly"].splitlines()[:4]:
        if line.startswith(("  variants", "  profiles")):
            assert line in two.splitlines()
