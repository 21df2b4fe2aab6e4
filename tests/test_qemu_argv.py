"""QEMU's arguments for the embedded host, built without booting anything."""

from __future__ import annotations

import re
from pathlib import Path

from kbisect.config.model import QemuOptions
from kbisect.lab.qemu import dom0_cmdline, multiboot_modules


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
