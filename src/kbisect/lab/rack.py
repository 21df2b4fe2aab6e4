"""Rack machines: real machines running Xen, reached over SSH.

login: the machine's address; its host key is pinned in configs/known_hosts (`lab.trust`).
boot:  grub2, a one-time entry per build (kbisect.lab.grub), then a reboot over SSH.
power: an external command such as an IPMI power cycle (kbisect.lab.power).
console: an optional command whose output is the serial console (ipmitool sol, conserver),
         run by kbisect during deploys and jobs (kbisect.lab.console).
housekeeping: each deploy removes old kbisect builds from the host (kbisect.lab.grub);
         `clean` removes kbisect's grub entry, on request.
"""

from __future__ import annotations

from pathlib import Path

from kbisect.build.store import Artifact
from kbisect.config.model import Host
from kbisect.deadline import Deadline
from kbisect.lab.console import ConsoleCapture
from kbisect.lab.grub import GrubBoot
from kbisect.lab.housekeeping import Removal
from kbisect.lab.power import CommandPower, command_env, local_command
from kbisect.lab.protocol import HostDown, LabHost, LabPaths, quiet
from kbisect.lab.ssh import KnownHosts, SshTarget
from kbisect.processes import CommandError
from kbisect.progress import Say

_LOGIN_SECONDS = 60.0  # a host that is up answers at once; one that reboots gets a minute


class RackHost(LabHost):
    """A machine running Xen, reached over SSH and booted through grub2."""

    kind = "ssh"

    def __init__(self, config: Host, paths: LabPaths, say: Say = quiet) -> None:
        super().__init__(config, paths, say)
        assert config.ssh is not None  # the config loader guarantees it for kind ssh
        self.ssh = config.ssh
        self.grub = GrubBoot(self.name, config.ssh, self.dir)
        self.power = CommandPower(self.name, config.ssh.power_cycle, paths.project_root)
        self._known = KnownHosts(paths.rack_known_hosts)
        self.console = (
            ConsoleCapture(
                self.name,
                local_command(config.ssh.console),
                self.dir / "console.log",
                self.dir / "console.json",
                command_env(paths.project_root),
            )
            if config.ssh.console
            else None
        )

    # -- login ----------------------------------------------------------------------------

    @property
    def known_hosts(self) -> KnownHosts:
        return self._known

    def target(self) -> SshTarget:
        key = Path(self.ssh.key).expanduser() if self.ssh.key else self.paths.key_path
        return SshTarget(self.name, self.ssh.address, self.ssh.port, self.ssh.user, key)

    # -- boot -----------------------------------------------------------------------------

    def _boot(self, artifact: Artifact, deadline: Deadline) -> str | None:
        try:
            session = self.connect(deadline)
        except HostDown:
            self.say(f"{self.name}: not answering before the deploy")
            raise
        with session:
            before = self.probe(session)
            self.grub.install(session, artifact, before)
            self.say(f"{self.name}: rebooting into {self.grub.entry_id(artifact)}")
            self.grub.reboot(session)
        return before.get("boot_id") or None

    def boot_method(self, artifact: Artifact) -> str:
        return f"grub2 one-shot '{self.grub.entry_id(artifact)}'"

    # -- power ----------------------------------------------------------------------------

    def _power_cycle(self, artifact: Artifact) -> bool:
        self.power.cycle()
        return False  # it boots whatever grub picks: the armed entry, or the fallback

    def clean(self, *, kernels: bool) -> tuple[bool, Removal | None]:
        """Take kbisect's grub entry off the host and, with `kernels`, every kbisect build but
        the one it runs. Returns whether there was an entry, and what was removed."""
        with self.connect(Deadline(_LOGIN_SECONDS)) as session:
            entry = self.grub.remove_entry(session)
            if not kernels:
                return entry, None
            running = self.probe(session)
            return entry, self.grub.tidy(session, running, installing=None, keep=0)

    def shutdown(self) -> bool:
        return self.close_console()  # the machine itself runs on: kbisect does not power it off

    # -- console --------------------------------------------------------------------------

    def console_log(self) -> Path | None:
        return self.console.log if self.console else None

    def open_console(self, *, fresh: bool = False) -> None:
        if self.console is None:
            return
        try:
            self.console.start(fresh=fresh)
        except CommandError as exc:  # a deploy without its console is still a deploy
            self.say(f"{self.name}: cannot capture the console: {exc}")

    def close_console(self) -> bool:
        return self.console.stop() if self.console else False
