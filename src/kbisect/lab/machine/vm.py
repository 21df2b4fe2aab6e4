"""The emulated rack machine, running: QEMU booting the machine's disk, and its power switch.

The disk is a qcow2 overlay over the cached image (the image stays pristine; `fresh` starts a new
overlay, a reinstalled machine). SSH is forwarded from the host's configured loopback port, the
serial console (GRUB, Xen, dom0) goes to a log file, and the QEMU monitor listens on a Unix
socket: `cycle` is `system_reset` there (a hard reset, as a BMC's power cycle), `off` is `quit`.
QEMU runs in its own session and outlives the command that started it, like a machine that is
switched on; it is recorded (PID, files) in a state file and ended by that PID.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path

from kbisect import processes
from kbisect.config.model import EmulatedMachine, Host
from kbisect.deadline import Deadline
from kbisect.errors import InfraError
from kbisect.lab.machine.disk import seed_disk
from kbisect.lab.machine.image import ImageRecipe, MachineImage, ensure_image
from kbisect.processes import STDOUT, command_line, end_pid
from kbisect.progress import Say

QEMU = "qemu-system-x86_64"
PROC_MARKER = "kbisect-machine."  # in QEMU's -name: a recycled PID is never taken for ours
_MONITOR_SECONDS = 10.0
_QUIT_SECONDS = 15.0


class Power(Enum):
    ON = "on"
    OFF = "off"


@dataclass(frozen=True)
class MachineState:
    pid: int
    image: str
    started: float


class VirtualMachine:
    """One emulated rack machine: `on`, `off`, `cycle`, `status`."""

    def __init__(self, host: Host, lab_dir: Path, cache_dir: Path, public_key: str) -> None:
        if host.machine is None or host.ssh is None:
            raise InfraError(f"{host.name} is not an emulated machine (no `machine` section)")
        self.name = host.name
        self.machine: EmulatedMachine = host.machine
        self.port = host.ssh.port
        self.cache_dir = cache_dir
        self.public_key = public_key
        self.dir = lab_dir / host.name / "machine"
        self.recipe = ImageRecipe.of(host.machine)

    @property
    def console_log(self) -> Path:
        return self.dir / "console.log"

    @property
    def monitor(self) -> Path:
        return self.dir / "monitor.sock"

    @property
    def overlay(self) -> Path:
        return self.dir / "disk.qcow2"

    @property
    def _state_file(self) -> Path:
        return self.dir / "state.json"

    def state(self) -> MachineState | None:
        """What runs now (None when off; a stale state file is removed)."""
        try:
            state = MachineState(**json.loads(self._state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        if f"{PROC_MARKER}{self.name}" not in (command_line(state.pid) or []):
            self._state_file.unlink(missing_ok=True)
            return None
        return state

    def status(self) -> Power:
        return Power.ON if self.state() else Power.OFF

    def image(self, say: Say) -> MachineImage:
        return ensure_image(self.recipe, self.cache_dir, say)

    def on(self, say: Say, *, fresh: bool = False) -> bool:
        """Switch the machine on (building its image first if needed); False if it was on.
        `fresh` gives it a new disk (an overlay over the pristine image) first."""
        if self.state() is not None:
            if fresh:
                raise InfraError(f"{self.name} is on: switch it off before giving it a new disk")
            return False
        image = self.image(say)
        self.dir.mkdir(parents=True, exist_ok=True)
        if fresh or not self._overlay_matches():
            self._new_overlay(image)
        seed = self.dir / "seed.img"
        seed_disk({"authorized_keys": self.public_key.encode() + b"\n"}, seed, self.dir)
        self.monitor.unlink(missing_ok=True)
        argv = self._argv(seed)
        with (self.dir / "qemu.log").open("w") as qlog:
            # Not tracked: the machine stays on after the command that switched it on.
            child = processes.start(argv, stdout=qlog, stderr=STDOUT, track=False)
        state = MachineState(child.pid, self.recipe.key, time.time())
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state)))
        tmp.rename(self._state_file)
        self._wait_monitor(child.pid)
        say(f"{self.name}: on (QEMU {child.pid}); console {self.console_log}")
        return True

    def off(self) -> bool:
        """Switch the machine off (QEMU `quit`, else its PID ended); False if it was off."""
        state = self.state()
        if state is None:
            return False
        with contextlib.suppress(InfraError):
            self._command("quit")
        deadline = Deadline(_QUIT_SECONDS)
        while processes.pid_alive(state.pid) and not deadline.expired:
            time.sleep(0.1)
        end_pid(state.pid)  # reaps it, or ends one that did not quit
        self._state_file.unlink(missing_ok=True)
        self.monitor.unlink(missing_ok=True)
        return True

    def cycle(self, say: Say) -> None:
        """A power cycle: a hard reset of a running machine; one that is off is switched on."""
        if self.state() is None:
            self.on(say)
            return
        self._command("system_reset")
        say(f"{self.name}: reset")

    # -- parts ------------------------------------------------------------------------------

    def _argv(self, seed: Path) -> list[str]:
        m = self.machine
        return [
            QEMU, "-name", f"{PROC_MARKER}{self.name}",
            "-accel", "tcg", "-cpu", "qemu64", "-machine", "pc",
            "-m", str(m.memory_mb), "-smp", str(m.cpus),
            "-display", "none", "-vga", "none",
            "-serial", f"file:{self.console_log}",
            "-monitor", f"unix:{self.monitor},server,nowait",
            "-drive", f"file={self.overlay},format=qcow2,if=virtio",
            "-drive", f"file={seed},format=raw,if=virtio,readonly=on",
            "-nic", f"user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{self.port}-:22",
        ]  # fmt: skip

    def _overlay_matches(self) -> bool:
        marker = self.dir / "disk.image"
        return self.overlay.is_file() and marker.is_file() and marker.read_text() == self.recipe.key

    def _new_overlay(self, image: MachineImage) -> None:
        self.overlay.unlink(missing_ok=True)
        processes.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(image.disk),
             str(self.overlay)],
            deadline=60,
            hint="./bootstrap installs qemu-utils",
            what=f"making {self.name}'s disk",
        )  # fmt: skip
        (self.dir / "disk.image").write_text(self.recipe.key)

    def _wait_monitor(self, pid: int) -> None:
        deadline = Deadline(_MONITOR_SECONDS)
        while not deadline.expired:
            if not processes.pid_alive(pid):
                said = (self.dir / "qemu.log").read_text(errors="replace").strip()
                self._state_file.unlink(missing_ok=True)
                raise InfraError(f"QEMU for {self.name} exited at once: {said[-300:]}")
            if self.monitor.exists():
                return
            time.sleep(0.1)
        raise InfraError(f"QEMU for {self.name}: no monitor after {_MONITOR_SECONDS:g} s")

    def _command(self, command: str) -> str:
        """One QEMU monitor command; returns what the monitor answered."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(_MONITOR_SECONDS)
                sock.connect(str(self.monitor))
                _read_prompt(sock)
                sock.sendall(command.encode() + b"\n")
                return "" if command == "quit" else _read_prompt(sock)
        except OSError as exc:
            raise InfraError(f"{self.name}: QEMU monitor ({command}): {exc}") from exc


def _read_prompt(sock: socket.socket) -> str:
    """Read until the monitor's `(qemu) ` prompt (the socket's timeout bounds each read)."""
    data = b""
    while not data.endswith(b"(qemu) "):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")
