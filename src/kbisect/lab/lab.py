"""The lab as the rest of kbisect sees it: hosts by name, the lab key, leases, and the promise
that every emulator kbisect starts for a command is ended by PID when the command ends.

State lives in the cache (`lab/`): the lab's ed25519 key, the embedded hosts' directories
(console logs, initramfs, QEMU state), their known_hosts, and the lease files. Rack machines'
host keys are pinned in `configs/known_hosts`, which belongs to the lab configuration.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
from pathlib import Path
from types import FrameType

from kbisect.config import Project
from kbisect.deadline import Deadline
from kbisect.errors import InfraError, UserError
from kbisect.lab.kinds import make_host
from kbisect.lab.machine.vm import VirtualMachine
from kbisect.lab.protocol import LabHost, LabPaths
from kbisect.lab.ssh import generate_keypair, load_private_key
from kbisect.lab.store_lease import HeldLease, LeaseBook, lease_book
from kbisect.progress import Say

KEY_NAME = "id_ed25519"
RACK_KNOWN_HOSTS = "known_hosts"


def lab_dir(project: Project) -> Path:
    return project.cache_dir / "lab"


def lab_paths(project: Project) -> LabPaths:
    """The lab's directories and key; the key is generated on first use."""
    directory = lab_dir(project)
    key_path = directory / KEY_NAME
    if not key_path.exists():
        generate_keypair(key_path, comment="kbisect-lab")
    key = load_private_key(key_path)
    return LabPaths(
        lab_dir=directory,
        key_path=key_path,
        public_key=f"{key.get_name()} {key.get_base64()} kbisect-lab",
        rack_known_hosts=project.configs_dir / RACK_KNOWN_HOSTS,
        project_root=project.root,
    )


class Lab:
    """Hosts of one kbisect command. Used as a context manager: on leaving it (normally, by an
    exception, by Ctrl-C or SIGTERM) every embedded host this command booted is shut down,
    unless `keep_up` (lab.up and deploy leave the host running on purpose), and every console
    capture it started is ended."""

    def __init__(self, project: Project, *, keep_up: bool = False, say: Say = print) -> None:
        self.project = project
        self.paths = lab_paths(project)
        self.keep_up = keep_up
        self.say = say
        self._hosts: dict[str, LabHost] = {}
        self._leases: list[HeldLease] = []
        self._switched_on: list[VirtualMachine] = []

    def host(self, name: str | None) -> LabHost:
        """A host by name; without a name, the only host or the first embedded one."""
        hosts = self.project.hosts
        if name is None:
            if not hosts:
                raise UserError("no hosts are configured (configs/*.yaml, key `hosts`)")
            embedded = [h for h in hosts.values() if h.kind == "qemu"]
            name = (embedded or list(hosts.values()))[0].name
        if name not in hosts:
            known = ", ".join(sorted(hosts)) or "none"
            raise UserError(f"unknown host {name!r} (configured: {known})")
        if name not in self._hosts:
            self._hosts[name] = make_host(hosts[name], self.paths, self.say)
        return self._hosts[name]

    def machine(self, name: str) -> VirtualMachine:
        """The emulated machine behind a host (UserError if the host is not one)."""
        config = self.host(name).config
        if config.machine is None:
            raise UserError(f"{name} is not an emulated machine (it has no `machine` section)")
        paths = self.paths
        return VirtualMachine(config, paths.lab_dir, self.project.cache_dir, paths.public_key)

    def all_hosts(self) -> list[LabHost]:
        return [self.host(name) for name in sorted(self.project.hosts)]

    def lease(self, host: LabHost, purpose: str, wait: float = 0.0) -> HeldLease:
        """Take the host for this process (released when the Lab closes, or by the caller)."""
        lease = self.leases().acquire(host.name, purpose, Deadline(wait))
        self._leases.append(lease)
        if host.config.machine is not None:
            self._switch_on(host)
        return lease

    def _switch_on(self, host: LabHost) -> None:
        """An emulated machine that is off is switched on for the work it is leased for (and
        off again when the Lab closes, unless kept up); the deploy then waits for its boot."""
        vm = self.machine(host.name)
        if vm.on(self.say):
            self._switched_on.append(vm)

    def leases_dir(self) -> Path:
        return self.paths.lab_dir / "leases"

    def leases(self) -> LeaseBook:
        """The host leases: in the shared store when there is one, else on this machine."""
        settings = self.project.settings
        return lease_book(self.leases_dir(), self.project.store_url, settings.lease_timeout)

    def close(self) -> None:
        for host in self._hosts.values():
            with contextlib.suppress(Exception):
                host.close_console()  # a console capture ends with the command, kept up or not
            if not self.keep_up and not self._held_by_another(host):
                with contextlib.suppress(Exception):
                    host.shutdown()
        while self._switched_on and not self.keep_up:
            with contextlib.suppress(Exception):
                self._switched_on.pop().off()
        for lease in self._leases:
            with contextlib.suppress(Exception):
                lease.release()
        self._leases.clear()

    def _held_by_another(self, host: LabHost) -> bool:
        """Whether another process (here, or another controller of a shared store) holds the
        host now: then its emulator is that process's to end, not this one's."""
        try:
            holder = self.leases().holder(host.name)
        except (InfraError, OSError):  # an unreachable store: end what this command started
            return False
        if holder is None:
            return False
        return (holder.hostname, holder.pid) != (socket.gethostname(), os.getpid())

    def __enter__(self) -> Lab:
        _open_labs.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(ValueError):
            _open_labs.remove(self)
        self.close()


# A kill (SIGTERM, SIGHUP) must end QEMU too: turn it into SystemExit so the `with Lab` blocks
# unwind; atexit covers an interpreter exit that skipped them.
_open_labs: list[Lab] = []


def _close_all() -> None:
    for lab in list(_open_labs):
        lab.close()


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


_handlers_installed = False


def install_exit_handlers() -> None:
    """Called by the command line (not by library users, whose signals are theirs)."""
    global _handlers_installed
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(_close_all)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError):  # not the main thread
            signal.signal(sig, _exit_on_signal)
