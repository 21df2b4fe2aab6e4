"""The host protocol: what every kind of lab host implements, and what all of them share.

The rest of kbisect cannot tell an emulated host from a rack machine: it sees `LabHost`. A kind of
host (kbisect.lab.kinds) implements four small protocols, the way labgrid's drivers do:

- login: where to reach the host over SSH (`target`) and which host keys it must offer
- boot: get a build running (`_boot`), optionally ahead of time (`stage`)
- power: restart a host that does not answer (`_power_cycle`), tell a host known to be gone
  (`check_alive`), end what kbisect started (`shutdown`)
- console: the host's console log, where there is one (`console_log`), and the capture kbisect
  runs for it where the host's own emulator does not write it (`open_console`, `close_console`)

`deploy` is shared: it boots a build and proves it: the boot id changed, `uname -r` is the build's
release, the dom0 command line carries `kbisect.build=KEY`, and /sys/hypervisor/type says xen. A
host that does not come back is power-cycled up to `max_power_cycles` times and then marked broken
for the run; the console log is kept. All of that is InfraError (ERROR), never a kernel FAIL,
with one exception that has evidence: the console shows the boot loader loading the build, and
the host came back on another kernel (KernelDidNotBoot: the kernel's FAIL; the host is fine).
"""

from __future__ import annotations

import json
import shutil
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kbisect.build.store import Artifact
from kbisect.config.model import Host
from kbisect.deadline import Deadline
from kbisect.errors import ExitCode, InfraError, KbisectError
from kbisect.lab.probe import BUILD_PARAM, LOADING_MARK, PROBE, Probe
from kbisect.lab.ssh import (
    HostKeyChanged,
    HostKeyUnknown,
    KnownHosts,
    SshSession,
    SshTarget,
    connect,
)
from kbisect.progress import Say, phase

_RETRY_SECONDS = 2.0
_SHORT = 60.0


class HostDown(InfraError):
    """The host does not answer (SSH) or its emulator is gone."""


class HostBroken(InfraError):
    """Power cycles did not bring the host back: no more work goes to it in this run."""


class BootMismatch(InfraError):
    """The host came back, but not running what was deployed, with no evidence that the boot
    loader ever chose the build (grub not armed, an entry that does not load)."""


class KernelDidNotBoot(KbisectError):
    """The boot loader chose the build (its console says so), but the build never came up: the
    host came back on its fallback kernel after power cycles. The kernel's failure (a FAIL),
    not the lab's; the host is healthy for the next build."""

    exit_code = ExitCode.FAILED

    def __init__(self, message: str, console: Path | None) -> None:
        super().__init__(message)
        self.console = console


@dataclass
class Deployment:
    """A verified boot of one build on one host (recorded in the lab directory)."""

    host: str
    build_key: str
    release: str
    boot_id: str
    booted_at: float
    boot_seconds: float
    power_cycles: int
    fingerprint: dict[str, str] = field(default_factory=dict)
    console: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def load(cls, path: Path) -> Deployment | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None


@dataclass(frozen=True)
class LabPaths:
    """Where the lab keeps its state, and the key it logs in with."""

    lab_dir: Path  # cache/lab: per-host directories (console, known_hosts), leases
    key_path: Path  # the lab's ed25519 private key
    public_key: str  # its OpenSSH public line (authorized on embedded hosts)
    rack_known_hosts: Path  # configs/known_hosts: pins for rack machines (lab.trust)
    project_root: Path | None = None  # given to commands kbisect runs (KBISECT_ROOT)


def quiet(_: str) -> None:
    """A `Say` that says nothing."""


class LabHost(ABC):
    """One test host. Its kind implements login, boot, power and console (the abstract methods
    below); connecting, probing and `deploy` are shared."""

    kind: str

    def __init__(self, config: Host, paths: LabPaths, say: Say = quiet) -> None:
        self.config = config
        self.name = config.name
        self.paths = paths
        self.dir = paths.lab_dir / config.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.say = say
        self.broken: str | None = None

    # -- login ----------------------------------------------------------------------------

    @property
    @abstractmethod
    def known_hosts(self) -> KnownHosts:
        """The host keys this host may offer."""

    @abstractmethod
    def target(self) -> SshTarget:
        """Where to log in now (raises HostDown when an emulated host is not running)."""

    # -- boot -----------------------------------------------------------------------------

    @abstractmethod
    def _boot(self, artifact: Artifact, deadline: Deadline) -> str | None:
        """Start booting the build; returns the boot id before the reboot, if known.
        `deadline` bounds reaching a host that may still be booting, not the work after."""

    def stage(self, artifact: Artifact) -> bool:
        """Get `artifact` ready to deploy next, while the host still works on the current build.
        True if the host can (the embedded host boots it in a standby QEMU); a deploy of
        another build discards what was staged. A rack machine has one kernel at a time."""
        return False

    def _known_facts(self) -> dict[str, str]:
        """Fingerprint facts the host kind knows better than the host (e.g. Xen's command
        line, which a Xen without `xl` does not tell)."""
        return {}

    @abstractmethod
    def boot_method(self, artifact: Artifact) -> str:
        """How this kind boots a build, for the fingerprint (`boot`) and the JUnit."""

    # -- power ----------------------------------------------------------------------------

    @abstractmethod
    def _power_cycle(self, artifact: Artifact) -> bool:
        """Force a restart of a host that does not answer; True if that booted the build."""

    def check_alive(self) -> None:  # noqa: B027 (most kinds cannot tell without SSH)
        """Raise HostDown with the evidence when the host is known to be gone."""

    def shutdown(self) -> bool:
        """End what kbisect started for this host; True if something was running."""
        return False

    # -- console --------------------------------------------------------------------------

    @abstractmethod
    def console_log(self) -> Path | None:
        """The host's console log, where the kind has one."""

    def open_console(self, *, fresh: bool = False) -> None:  # noqa: B027 (most capture alone)
        """Capture the console from now on, where kbisect runs the capture (a rack machine's
        console command); `fresh` starts the log anew, so that a deploy's log is its boot."""

    def close_console(self) -> bool:
        """End the console capture kbisect runs, by its PID; True if one was running."""
        return False

    # -- shared behaviour -----------------------------------------------------------------

    @property
    def deployment_file(self) -> Path:
        return self.dir / "deployment.json"

    def deployment(self) -> Deployment | None:
        return Deployment.load(self.deployment_file)

    def connect(self, deadline: Deadline) -> SshSession:
        """Log in, retrying until the deadline (a booting host refuses for a while).

        A pinned key that does not match is never retried: that is not a boot in progress.
        """
        last = "no attempt"
        while True:
            self.check_alive()
            try:
                return connect(
                    self.target(), self.known_hosts, Deadline(min(deadline.remaining(), 20.0))
                )
            except (HostKeyChanged, HostKeyUnknown):
                raise
            except HostDown:
                raise
            except InfraError as exc:
                last = str(exc)
            if deadline.remaining() < _RETRY_SECONDS:
                raise HostDown(
                    f"{self.name}: no SSH login within {deadline.seconds:g} s ({last})"
                    + self._console_note()
                )
            time.sleep(_RETRY_SECONDS)

    def probe(self, session: SshSession, deadline: Deadline | None = None) -> Probe:
        result = session.run_shell(PROBE, deadline or Deadline(_SHORT))
        if not result.ok:
            raise InfraError(f"{self.name}: probing the host failed: {result.stderr!r:.200}")
        return Probe.parse(result.text())

    def deploy(self, artifact: Artifact) -> Deployment:
        """Boot `artifact` and verify it; power-cycle a host that does not come back."""
        with phase(f"{self.name}: deploying {artifact.key}"):
            return self._deploy(artifact)

    def _deploy(self, artifact: Artifact) -> Deployment:
        if self.broken:
            raise HostBroken(f"{self.name} is marked broken for this run: {self.broken}")
        started = time.monotonic()
        self.deployment_file.unlink(missing_ok=True)
        self.open_console(fresh=True)
        cycles, armed, cycle_next = 0, False, False
        previous: str | None = None
        while True:
            try:
                if cycle_next:
                    cycle_next = False
                    armed = self._power_cycle(artifact) or armed
                if not armed:
                    previous = self._boot(artifact, Deadline(self.config.boot_timeout))
                    armed = True
                probe = self._wait_back(previous, Deadline(self.config.boot_timeout))
                break
            except HostDown as exc:
                if cycles >= self.config.max_power_cycles:
                    raise self._mark_broken(exc, cycles) from None
                cycles += 1
                cycle_next = True
                self.say(
                    f"{self.name}: not back ({_first_line(exc)}); power cycle "
                    f"{cycles}/{self.config.max_power_cycles}"
                )
        self._verify(probe, artifact)
        console = self.console_log()
        done = Deployment(
            host=self.name,
            build_key=artifact.key,
            release=probe.get("release"),
            boot_id=probe.get("boot_id"),
            booted_at=time.time(),
            boot_seconds=round(time.monotonic() - started, 1),
            power_cycles=cycles,
            fingerprint=probe.fingerprint(
                {**self._known_facts(), "boot": self.boot_method(artifact)}
            ),
            console=str(console) if console else None,
        )
        tmp = self.deployment_file.with_suffix(".tmp")
        tmp.write_text(done.to_json())
        tmp.rename(self.deployment_file)
        return done

    def _wait_back(self, previous: str | None, deadline: Deadline) -> Probe:
        """Wait until the host answers with a boot id other than `previous`."""
        while True:
            try:
                with self.connect(deadline) as session:
                    probe = self.probe(
                        session, Deadline(max(min(_SHORT, deadline.remaining()), 15))
                    )
            except (HostKeyChanged, HostKeyUnknown, HostDown):
                raise
            except InfraError as exc:  # logged in, but a booting host is slow to answer yet
                if deadline.remaining() < _RETRY_SECONDS:
                    raise HostDown(
                        f"{self.name}: not answering within {deadline.seconds:g} s "
                        f"({_first_line(exc)})" + self._console_note()
                    ) from None
                time.sleep(_RETRY_SECONDS)
                continue
            if probe.get("boot_id") and probe.get("boot_id") != previous:
                return probe
            if deadline.remaining() < _RETRY_SECONDS:
                raise HostDown(
                    f"{self.name}: still running the previous boot ({previous}) after "
                    f"{deadline.seconds:g} s" + self._console_note()
                )
            time.sleep(_RETRY_SECONDS)

    def _verify(self, probe: Probe, artifact: Artifact) -> None:
        wanted_release = str(artifact.meta.get("kernel_release", ""))
        problems = []
        if probe.build != artifact.key:
            problems.append(f"{BUILD_PARAM}={probe.build or '(none)'} instead of {artifact.key}")
        if wanted_release and probe.get("release") != wanted_release:
            problems.append(f"uname -r {probe.get('release')!r} instead of {wanted_release!r}")
        if probe.get("hypervisor") != "xen":
            problems.append(f"hypervisor {probe.get('hypervisor') or '(none)'!r}, not xen")
        if problems and probe.build != artifact.key and self._console_shows_loading(artifact):
            raise KernelDidNotBoot(
                f"kernel did not boot: grub loaded build {artifact.key} on {self.name}, which "
                f"came back on {probe.get('release') or 'another kernel'} instead ("
                + "; ".join(problems)
                + ")"
                + self._console_note(),
                self._keep_console(),
            )
        if problems:
            raise BootMismatch(
                f"{self.name} came back but not running build {artifact.key}: "
                + "; ".join(problems)
                + self._console_note()
            )

    def _console_shows_loading(self, artifact: Artifact) -> bool:
        console = self.console_log()
        if console is None or not console.exists():
            return False
        return f"{LOADING_MARK} {artifact.key}" in console.read_text(errors="replace")

    def _mark_broken(self, exc: InfraError, cycles: int) -> HostBroken:
        kept = self._keep_console()
        self.broken = f"did not come back after {cycles} power cycle(s): {exc}"
        where = f"; console log kept: {kept}" if kept else ""
        return HostBroken(f"{self.name} is broken for this run: {self.broken}{where}")

    def _keep_console(self) -> Path | None:
        console = self.console_log()
        if console is None or not console.exists():
            return None
        kept = self.dir / f"console-broken-{time.strftime('%Y%m%dT%H%M%S')}.log"
        shutil.copyfile(console, kept)
        return kept

    def _console_note(self, lines: int = 15) -> str:
        console = self.console_log()
        if console is None or not console.exists():
            return ""
        tail = console.read_text(errors="replace").splitlines()[-lines:]
        return f"; console {console}:\n" + "\n".join(tail)


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
