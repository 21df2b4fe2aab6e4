"""Rack machines: real machines running Xen, reached over SSH.

login: the machine's address; its host key is pinned in configs/known_hosts (`lab.trust`).
boot:  grub2, a one-time entry per build (kbisect.lab.grub), then a reboot over SSH.
power: an external command such as an IPMI power cycle (kbisect.lab.power).
console: none yet (a serial-over-LAN capture would go here).
"""

from __future__ import annotations

from pathlib import Path

from kbisect.build.store import Artifact
from kbisect.config.model import Host
from kbisect.deadline import Deadline
from kbisect.lab.grub import GrubBoot
from kbisect.lab.power import CommandPower
from kbisect.lab.protocol import HostDown, LabHost, LabPaths, quiet
from kbisect.lab.ssh import KnownHosts, SshTarget
from kbisect.progress import Say


class RackHost(LabHost):
    """A machine running Xen, reached over SSH and booted through grub2."""

    kind = "ssh"

    def __init__(self, config: Host, paths: LabPaths, say: Say = quiet) -> None:
        super().__init__(config, paths, say)
        assert config.ssh is not None  # the config loader guarantees it for kind ssh
        self.ssh = config.ssh
        self.grub = GrubBoot(self.name, config.ssh, self.dir)
        self.power = CommandPower(self.name, config.ssh.power_cycle)
        self._known = KnownHosts(paths.rack_known_hosts)

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

    # -- power ----------------------------------------------------------------------------

    def _power_cycle(self, artifact: Artifact) -> bool:
        self.power.cycle()
        return False  # it boots whatever grub picks: the armed entry, or the fallback

    # -- console --------------------------------------------------------------------------

    def console_log(self) -> Path | None:
        return None
