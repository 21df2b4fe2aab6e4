"""The embedded host: Xen under QEMU on this machine (kbisect.lab.qemu).

login: 127.0.0.1 and the port QEMU forwards; kbisect generated the host key, so it is pinned
       automatically, in the host's own known_hosts in the cache (rewritten every boot).
boot:  QEMU direct boot (Xen as -kernel, the build's bzImage and a kbisect initramfs as modules);
       the next build can boot ahead of time on a standby QEMU and be promoted (`stage`).
power: the QEMU process: a power cycle is a fresh QEMU with the build, so it deploys too.
console: Xen's serial console, captured by QEMU to a file.
"""

from __future__ import annotations

from pathlib import Path

from kbisect.build.store import Artifact
from kbisect.config.model import Host
from kbisect.deadline import Deadline
from kbisect.errors import InfraError
from kbisect.lab.probe import BUILD_PARAM
from kbisect.lab.protocol import HostDown, LabHost, LabPaths, quiet
from kbisect.lab.qemu import BootInputs, QemuHost, standby_wanted, xen_cmdline
from kbisect.lab.ssh import KnownHosts, SshTarget, parse_public_key
from kbisect.progress import Say


class EmbeddedHost(LabHost):
    """Xen under QEMU on this machine: `qemu` is its QEMU, `standby` the one booting the next
    build ahead of time."""

    kind = "qemu"

    def __init__(self, config: Host, paths: LabPaths, say: Say = quiet) -> None:
        super().__init__(config, paths, say)
        self.qemu = QemuHost(config, paths.lab_dir)
        self.standby = QemuHost(config, paths.lab_dir, slot="standby")
        self.extra_files: dict[str, Path] = {}
        # One pin per boot: the port changes every time, so the file is rewritten each boot.
        self._known = KnownHosts(self.dir / "known_hosts")

    # -- login ----------------------------------------------------------------------------

    @property
    def known_hosts(self) -> KnownHosts:
        return self._known

    def target(self) -> SshTarget:
        state = self.qemu.state()
        if state is None:
            raise HostDown(f"{self.name}: QEMU is not running (start it with `kbisect lab.up`)")
        return SshTarget(self.name, "127.0.0.1", state.port, "root", self.paths.key_path)

    # -- boot -----------------------------------------------------------------------------

    def _boot(self, artifact: Artifact, deadline: Deadline) -> str | None:
        self._start(artifact)
        return None

    def stage(self, artifact: Artifact) -> bool:
        if not standby_wanted(self.qemu.opts):
            return False
        staged = self.standby.state()
        if staged is not None and staged.build_key == artifact.key:
            return True
        self.say(f"{self.name}: booting {artifact.key} on standby, for the next deploy")
        try:
            self.standby.launch(artifact, self._boot_inputs(artifact), background=True)
        except InfraError as exc:  # only a missed shortcut: the deploy boots it the slow way
            self.say(f"{self.name}: cannot boot on standby: {exc}")
            return False
        return True

    def _start(self, artifact: Artifact) -> None:
        """Promote the standby if it booted this build, else boot a fresh QEMU; pin its key."""
        staged = self.standby.state()
        try:
            if staged is not None and staged.build_key == artifact.key:
                self.say(f"{self.name}: switching to {artifact.key}, booted on standby")
                state = self.qemu.promote(self.standby, Deadline(self.config.boot_timeout))
            else:
                self.standby.stop()
                self.say(f"{self.name}: booting Xen + dom0 {artifact.key} under QEMU")
                state = self.qemu.start(artifact, self._boot_inputs(artifact))
        except InfraError as exc:
            raise HostDown(str(exc)) from None
        self._known.writable.unlink(missing_ok=True)
        self._known.add("127.0.0.1", state.port, parse_public_key(state.host_key_pub))

    def _boot_inputs(self, artifact: Artifact) -> BootInputs:
        return BootInputs(self.paths.public_key, self.extra_files, f"{BUILD_PARAM}={artifact.key}")

    def boot_method(self, artifact: Artifact) -> str:
        return "QEMU -kernel (Xen multiboot, direct)"

    def _known_facts(self) -> dict[str, str]:
        return {"xen_cmdline": xen_cmdline(self.qemu.opts)}

    # -- power ----------------------------------------------------------------------------

    def _power_cycle(self, artifact: Artifact) -> bool:
        self._start(artifact)  # a fresh QEMU boots the build: power cycle and deploy in one
        return True

    def check_alive(self) -> None:
        if self.qemu.state() is None:
            raise HostDown(
                f"{self.name}: QEMU is not running (it exited, was killed, or was never started)"
                + self._console_note(25)
            )

    def shutdown(self) -> bool:
        standby = self.standby.stop()
        return self.qemu.stop() or standby

    # -- console --------------------------------------------------------------------------

    def console_log(self) -> Path | None:
        return self.qemu.console_log
