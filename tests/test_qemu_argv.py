"""QEMU's arguments for the embedded host, built without booting anything."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from kbisect.config.model import Host, QemuOptions
from kbisect.deadline import Deadline
from kbisect.errors import InfraError
from kbisect.lab.protocol import KernelDidNotBoot
from kbisect.lab.qemu import QemuHost, QemuState, dom0_cmdline, multiboot_modules


def qemu_module_list(value: str) -> list[str]:
    """How QEMU reads -initrd for a multiboot kernel: a single comma starts the next module,
    a doubled one is a literal comma (its get_opt_value rule)."""
    return [part.replace(",,", ",") for part in re.split(r"(?<!,),(?!,)", value)]


def test_a_comma_on_the_dom0_command_line_stays_in_the_dom0_module() -> None:
    opts = QemuOptions(extra_dom0_cmdline="console=ttyS0,115200n8 earlycon=uart8250,io,0x3f8")
    cmdline = dom0_cmdline(opts, "kbisect.build=abc123")
    value = multiboot_modules(
        (Path("/cache/builds/abc123/bzImage"), cmdline), (Path("/cache/lab/q/initramfs.gz"), "")
    )
    assert qemu_module_list(value) == [
        f"/cache/builds/abc123/bzImage {cmdline}",
        "/cache/lab/q/initramfs.gz",
    ]
    assert "console=ttyS0,,115200n8 earlycon=uart8250,,io,,0x3f8" in value


def test_without_commas_the_module_list_is_unchanged() -> None:
    value = multiboot_modules((Path("/k/bzImage"), "console=hvc0 panic=-1"), (Path("/k/i.gz"), ""))
    assert value == "/k/bzImage console=hvc0 panic=-1,/k/i.gz"
    assert qemu_module_list(value) == ["/k/bzImage console=hvc0 panic=-1", "/k/i.gz"]


def test_a_comma_in_a_file_name_is_escaped_too() -> None:
    value = multiboot_modules((Path("/odd,dir/bzImage"), "x=1"), (Path("/odd,dir/i.gz"), ""))
    assert qemu_module_list(value) == ["/odd,dir/bzImage x=1", "/odd,dir/i.gz"]


# -- how a boot ends --------------------------------------------------------------------------


def _ended_boot(tmp_path: Path, console: str) -> Exception:
    """What waiting for a boot raises when QEMU is gone and the console says `console`."""
    host = QemuHost(Host(name="q", kind="qemu", qemu=QemuOptions()), tmp_path)
    host.console_log.write_text(console)
    (host.dir / "qemu.log").write_text("")  # QEMU's own messages: none
    dead = subprocess.Popen(["true"])  # a pid that no QEMU of this host runs any more
    dead.wait()
    state = QemuState(dead.pid, 1, str(host.console_log), "abc123", 0.0, "")
    with pytest.raises((KernelDidNotBoot, InfraError)) as raised:
        host._wait_ready(state, Deadline(5))
    return raised.value


def test_dom0_that_crashes_at_boot_is_the_kernels_fail(tmp_path: Path) -> None:
    crash = "(XEN) Domain 0 (vcpu#0) crashed on cpu#0:\n(XEN) Hardware Dom0 crashed: rebooting"
    raised = _ended_boot(tmp_path, crash)
    assert isinstance(raised, KernelDidNotBoot), raised
    assert str(raised).startswith("kernel did not boot: dom0 abc123 crashed under Xen on q")
    assert raised.console == tmp_path / "q" / "console.log"  # attached to the cell


def test_qemu_gone_without_xens_word_is_the_labs_error(tmp_path: Path) -> None:
    raised = _ended_boot(tmp_path, "(XEN) Xen version 4.17\n")
    assert not isinstance(raised, KernelDidNotBoot)
    assert "exited (gone) during boot" in str(raised)
