"""FAKE rack machine boot and power: stand-ins for what cannot exist here (grub, a reboot, an
IPMI power cycle). Everything else in the rack-host tests is real: OpenSSH sshd in a network
namespace, paramiko, uploads, the files kbisect installs, and the grub.d script it writes, which
the fake `update-grub` really runs.

The machine's state is a directory: `boot_id`, `cmdline` and `sys/` are bind-mounted over
/proc/sys/kernel/random/boot_id, /proc/cmdline and /sys in the server's mount namespace (see
`NetnsLab.add_openssh(machine=...)`); `release` is what the fake `uname -r` prints. Every fake
command appends its argv to `calls.jsonl`, so tests can say what kbisect asked for.

Modes (file `mode`): `ok` reboots into the armed grub entry (or the default one); `hang` never
comes back from `reboot` (the kernel panics); `fallback` comes back in the default entry (the
deployed kernel "hung" and grub's one-time entry was used up). File `power`: `ok` makes the fake
IPMI power cycle boot the machine, `dead` makes it do nothing.

The machine's serial console is the file `console`: every boot (and a panic) appends its
messages there, so a real console command (`tail -F`) can capture it as a BMC's would.

Run as a program: `python3 fake_machine.py MACHINE_DIR COMMAND ARGS...`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # not at run time: this file also runs as a program on the fake hosts
    from netns import NetnsLab, SshHost

FAKE_COMMANDS = (
    "grub-reboot", "grub-set-default", "update-grub", "reboot", "mkinitramfs", "uname", "dmesg",
)  # fmt: skip
DEFAULT_RELEASE = "6.1.0-13-amd64"
DEFAULT_CMDLINE = f"BOOT_IMAGE=/vmlinuz-{DEFAULT_RELEASE} root=/dev/sda1 ro quiet"


def fake_rack_host(netns: NetnsLab, name: str, workdir: Path) -> tuple[SshHost, FakeMachine]:
    """A namespace sshd host playing a rack machine: its state in workdir/machine-NAME, the
    fake commands on its PATH."""
    machine_dir = workdir / f"machine-{name}"
    machine_dir.mkdir()
    staging = workdir / f"shim-{name}"
    staging.mkdir()
    machine = FakeMachine(machine_dir).create(staging)
    host = netns.add_openssh(name, machine=machine_dir)
    for item in staging.iterdir():
        shutil.copy2(item, host.shim_dir / item.name)
    return host, machine


class FakeMachine:
    def __init__(self, root: Path) -> None:
        self.root = root

    def create(self, shim_dir: Path) -> FakeMachine:
        """Lay out a machine running its default kernel; put the fake commands in shim_dir."""
        r = self.root
        for d in ("boot", "lib/modules", "grub.d", "sys/hypervisor/version"):
            (r / d).mkdir(parents=True, exist_ok=True)
        for node in ("node0", "node1"):
            (r / "sys/devices/system/node" / node).mkdir(parents=True, exist_ok=True)
        (r / "sys/hypervisor/type").write_text("xen\n")
        for name, value in (("major", "4"), ("minor", "17"), ("extra", ".2")):
            (r / "sys/hypervisor/version" / name).write_text(value + "\n")
        (r / "boot_id").write_text(str(uuid.uuid4()) + "\n")
        (r / "cmdline").write_text(DEFAULT_CMDLINE + "\n")
        (r / "release").write_text(DEFAULT_RELEASE + "\n")
        self.console_file.touch()
        self.set_mode("ok")
        self.set_power("ok")
        for command in FAKE_COMMANDS:
            self.install_shim(shim_dir, command)
        return self

    def install_shim(self, shim_dir: Path, command: str) -> None:
        shim = shim_dir / command
        program = Path(__file__).resolve()
        shim.write_text(f'#!/bin/sh\nexec {sys.executable} {program} {self.root} {command} "$@"\n')
        shim.chmod(0o755)

    def power_command(self) -> list[str]:
        """The host's `power_cycle` argv: a fake IPMI, run on this machine."""
        return [sys.executable, str(Path(__file__).resolve()), str(self.root), "power-cycle"]

    @property
    def console_file(self) -> Path:
        return self.root / "console"

    def console_command(self) -> list[str]:
        """The host's `console` argv: follows the console file from its end (real `tail`)."""
        return ["tail", "-F", "-n", "0", str(self.console_file)]

    def set_mode(self, mode: str) -> None:
        (self.root / "mode").write_text(mode)

    def set_power(self, mode: str) -> None:
        (self.root / "power").write_text(mode)

    def calls(self) -> list[list[str]]:
        path = self.root / "calls.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def called(self, command: str) -> list[list[str]]:
        return [argv[1:] for argv in self.calls() if argv[0] == command]

    def clear_calls(self) -> None:
        (self.root / "calls.jsonl").unlink(missing_ok=True)

    @property
    def boot_id(self) -> str:
        return (self.root / "boot_id").read_text().strip()

    # -- the fake firmware -----------------------------------------------------------------

    def boot(self) -> None:
        """What grub would boot now: the one-time entry if armed (and consume it), else the
        saved default (here: the machine's own kernel)."""
        armed = self.root / "next_entry"
        entry = armed.read_text().strip() if armed.exists() else ""
        armed.unlink(missing_ok=True)
        cmdline, release = self._booted(entry)
        self.console(entry, cmdline, release, "Debian GNU/Linux 12 rack1 ttyS0", "rack1 login:")
        # write in place: the files are bind-mounted, a rename would not show through
        (self.root / "cmdline").write_text(cmdline + "\n")
        (self.root / "release").write_text(release + "\n")
        (self.root / "boot_id").write_text(str(uuid.uuid4()) + "\n")

    def hang(self) -> None:
        """A reboot into the armed entry whose kernel panics: only the console tells."""
        armed = self.root / "next_entry"
        entry = armed.read_text().strip() if armed.exists() else ""
        cmdline, release = self._booted(entry)
        self.console(
            entry,
            cmdline,
            release,
            "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)",
        )

    def console(self, entry: str, cmdline: str, release: str, *last: str) -> None:
        """What the serial console shows of a boot of `entry` (empty: the default one)."""
        lines = [
            f"GRUB: booting '{entry or 'default'}'",
            "(XEN) Xen version 4.17.2 (Debian 4.17.2+76-ge1f9cb16e2-1~deb12u1)",
            f"[    0.000000] Linux version {release} (fake) #1 SMP",
            f"[    0.000000] Command line: {cmdline}",
            *last,
        ]
        with self.console_file.open("a") as f:
            f.write("".join(line + "\n" for line in lines))

    def _booted(self, entry: str) -> tuple[str, str]:
        """The command line and release that an entry boots (the default for an unknown one)."""
        found = self._entry(entry) if entry else None
        return found if found is not None else (DEFAULT_CMDLINE, DEFAULT_RELEASE)

    def _entry(self, entry_id: str) -> tuple[str, str] | None:
        cfg = self.root / "grub.cfg"
        if not cfg.exists():
            return None
        text = cfg.read_text()
        entries = self.root / "grub/kbisect.cfg"  # as grub sources it at boot, when told to
        if "source ${config_directory}/kbisect.cfg" in text and entries.exists():
            text += entries.read_text()
        block = re.search(
            rf"menuentry '[^']*dom0 (?P<rel>\S+)' --id {re.escape(entry_id)} \{{(?P<body>.*?)\n\}}",
            text,
            re.S,
        )
        if block is None:
            return None
        module = re.search(r"^\s*module2 (?!--nounzip)(\S+)\s*(.*)$", block["body"], re.M)
        return (module.group(2) if module else "", block["rel"])


def _record(machine: FakeMachine, argv: list[str]) -> None:
    with (machine.root / "calls.jsonl").open("a") as f:
        f.write(json.dumps(argv) + "\n")


def main(args: list[str]) -> int:
    machine = FakeMachine(Path(args[0]))
    command, rest = args[1], args[2:]
    if command == "dmesg":  # the machine's own kernel log, never this machine's
        log = machine.root / "dmesg"
        print(log.read_text() if log.exists() else "", end="")
        if "-c" in rest:
            log.write_text("")
        return 0
    if command == "uname":
        if rest == ["-r"]:
            print((machine.root / "release").read_text().strip())
            return 0
        os.execv("/bin/uname", ["uname", *rest])
    if command != "boot-later":
        _record(machine, [command, *rest])
    mode = (machine.root / "mode").read_text().strip()
    if command == "grub-reboot":
        (machine.root / "next_entry").write_text(rest[0])
    elif command == "grub-set-default":
        (machine.root / "default_entry").write_text(rest[0])
    elif command == "update-grub":  # runs the grub.d scripts there are (kbisect's, if any)
        script = machine.root / "grub.d/42_kbisect"
        out = subprocess.run(
            ["sh", str(script)] if script.exists() else ["true"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        (machine.root / "grub.cfg").write_text(out.stdout)
    elif command == "mkinitramfs":
        output = rest[rest.index("-o") + 1]
        Path(output).write_text(f"fake initramfs for {rest[-1]}\n")
    elif command == "reboot":
        if mode == "hang":
            machine.hang()
            return 0
        if mode == "fallback":
            (machine.root / "next_entry").unlink(missing_ok=True)
        # come back a moment later, after this command has answered
        subprocess.Popen(
            [sys.executable, __file__, str(machine.root), "boot-later"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    elif command == "boot-later":
        time.sleep(1.0)
        machine.boot()
    elif command == "power-cycle":
        if (machine.root / "power").read_text().strip() == "dead":
            return 0  # the BMC answered, the machine did not come back
        machine.boot()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
