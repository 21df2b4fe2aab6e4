"""Lab hosts behind one protocol, so the rest of kbisect cannot tell an emulated host from a rack
machine (the labgrid idea: drivers implement boot, power and console; callers see `LabHost`).

`deploy` boots a build and proves it: the boot id changed, `uname -r` is the build's release, the
dom0 command line carries `kbisect.build=KEY`, and /sys/hypervisor/type says xen. A host that does
not come back is power-cycled up to `max_power_cycles` times and then marked broken for the run;
the console log is kept. All of that is InfraError (ERROR), never a kernel FAIL.

Drivers:
- `EmbeddedHost`: Xen under QEMU on this machine (kbisect.lab.qemu); power = the QEMU process.
- `RackHost`: a machine running Xen, over SSH: install kernel, modules and initrd, write a grub2
  entry (multiboot2 Xen + module2 dom0), boot it once with grub-reboot (a hang falls back to the
  known-good default), reboot; power = an external command such as an IPMI power cycle.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shlex
import shutil
import tarfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kbisect import processes
from kbisect.build.store import Artifact
from kbisect.config.model import Host, SshOptions
from kbisect.deadline import Deadline
from kbisect.errors import InfraError
from kbisect.lab.qemu import QemuHost, standby_wanted, xen_cmdline
from kbisect.lab.ssh import (
    HostKeyChanged,
    HostKeyUnknown,
    KnownHosts,
    SshSession,
    SshTarget,
    connect,
    parse_public_key,
)
from kbisect.processes import CommandError
from kbisect.progress import phase

BUILD_PARAM = "kbisect.build"
_RETRY_SECONDS = 2.0
_SHORT = 60.0

# One round trip that answers both "did it boot what we deployed?" and the host fingerprint.
# Plain POSIX sh + busybox applets: the embedded dom0 has nothing else. Files are read with the
# `read` builtin, not $(cat ...): a fork in a PV dom0 under TCG costs tens of milliseconds.
PROBE = r"""
say() { printf '%s=%s\n' "$1" "$2"; }
first() { v=; [ -r "$1" ] && read -r v < "$1"; }
first /proc/sys/kernel/random/boot_id; say boot_id "$v"
say release "$(uname -r)"
first /sys/hypervisor/type; say hypervisor "$v"
h=/sys/hypervisor/version
if [ -r $h/major ]; then
    first $h/major; x=$v; first $h/minor; x=$x.$v; first $h/extra; say xen_version "$x$v"
fi
if command -v xl >/dev/null; then
    say xen_cmdline "$(xl info 2>/dev/null | sed -n 's/^xen_commandline *: //p')"
fi
first /proc/cmdline; say dom0_cmdline "$v"
set -- /sys/devices/system/node/node[0-9]*; [ -e "$1" ] || set --; say numa_nodes $#
first /proc/sys/kernel/numa_balancing; say numa_balancing "$v"
model= cpus=0
while IFS=: read -r key value; do
    case $key in
    "model name"*) [ -n "$model" ] || model=${value# } ;;
    processor*) cpus=$((cpus + 1)) ;;
    esac
done < /proc/cpuinfo
say cpu_model "$model"; say cpus $cpus
while read -r key value unit; do
    [ "$key" = MemTotal: ] && say memory_kb "$value"
done < /proc/meminfo
exit 0
"""

FINGERPRINT_KEYS = (
    "hypervisor",
    "xen_version",
    "xen_cmdline",
    "dom0_release",
    "dom0_cmdline",
    "numa_nodes",
    "numa_balancing",
    "cpu_model",
    "cpus",
    "memory_kb",
)


class HostDown(InfraError):
    """The host does not answer (SSH) or its emulator is gone."""


class HostBroken(InfraError):
    """Power cycles did not bring the host back: no more work goes to it in this run."""


class BootMismatch(InfraError):
    """The host came back, but not running what was deployed (e.g. grub fell back)."""


@dataclass(frozen=True)
class Probe:
    """What a booted host says about itself."""

    facts: dict[str, str]

    @classmethod
    def parse(cls, text: str) -> Probe:
        facts = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                facts[key.strip()] = value.strip()
        return cls(facts)

    def get(self, key: str) -> str:
        return self.facts.get(key, "")

    @property
    def build(self) -> str | None:
        """The build key on the dom0 command line (kbisect.build=KEY), if any."""
        for word in self.get("dom0_cmdline").split():
            name, _, value = word.partition("=")
            if name == BUILD_PARAM:
                return value
        return None

    def fingerprint(self, extra: dict[str, str]) -> dict[str, str]:
        got = dict(self.facts)
        got["dom0_release"] = got.pop("release", "")
        got.update({k: v for k, v in extra.items() if v and not got.get(k)})
        return {k: got.get(k, "") for k in FINGERPRINT_KEYS}


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


Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


class LabHost(ABC):
    """One test host. Drivers implement booting, power and the console; the rest is shared."""

    kind: str

    def __init__(self, config: Host, paths: LabPaths, say: Say = _quiet) -> None:
        self.config = config
        self.name = config.name
        self.paths = paths
        self.dir = paths.lab_dir / config.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.say = say
        self.broken: str | None = None

    # -- what drivers provide -------------------------------------------------------------

    @property
    @abstractmethod
    def known_hosts(self) -> KnownHosts: ...

    @abstractmethod
    def target(self) -> SshTarget:
        """Where to log in now (raises HostDown when an embedded host is not running)."""

    @abstractmethod
    def _boot(self, artifact: Artifact, deadline: Deadline) -> str | None:
        """Start booting the build; returns the boot id before the reboot, if known."""

    @abstractmethod
    def _power_cycle(self, artifact: Artifact, deadline: Deadline) -> bool:
        """Force a restart of a host that does not answer; True if that booted the build."""

    @abstractmethod
    def console_log(self) -> Path | None:
        """The host's console log, where the driver has one."""

    def _known_facts(self) -> dict[str, str]:
        """Fingerprint facts the driver knows better than the host (e.g. Xen's command line)."""
        return {}

    def check_alive(self) -> None:  # noqa: B027 (most drivers cannot tell without SSH)
        """Raise HostDown with the evidence when the host is known to be gone."""

    def shutdown(self) -> bool:
        """End what kbisect started for this host; True if something was running."""
        return False

    def stage(self, artifact: Artifact) -> bool:
        """Get `artifact` ready to deploy next, while the host still works on the current build.
        True if the driver can (the embedded host boots it in a standby QEMU); a deploy of
        another build discards what was staged. A rack machine has one kernel at a time."""
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
        cycles, armed, cycle_next = 0, False, False
        previous: str | None = None
        while True:
            try:
                if cycle_next:
                    cycle_next = False
                    armed = self._power_cycle(artifact, Deadline(self.config.boot_timeout)) or armed
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
            fingerprint=probe.fingerprint(self._known_facts()),
            console=str(console) if console else None,
        )
        tmp = self.deployment_file.with_suffix(".tmp")
        tmp.write_text(done.to_json())
        tmp.rename(self.deployment_file)
        return done

    def _wait_back(self, previous: str | None, deadline: Deadline) -> Probe:
        """Wait until the host answers with a boot id other than `previous`."""
        while True:
            with self.connect(deadline) as session:
                probe = self.probe(session, Deadline(min(_SHORT, max(deadline.remaining(), 5))))
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
        if problems:
            raise BootMismatch(
                f"{self.name} came back but not running build {artifact.key}: "
                + "; ".join(problems)
                + self._console_note()
            )

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


# ---------------------------------------------------------------------------------------------
# The embedded host


class EmbeddedHost(LabHost):
    """Xen under QEMU on this machine. kbisect generated its host key, so the key is pinned
    automatically, in the host's own known_hosts in the cache."""

    kind = "qemu"

    def __init__(self, config: Host, paths: LabPaths, say: Say = _quiet) -> None:
        super().__init__(config, paths, say)
        self.qemu = QemuHost(config, paths.lab_dir)
        self.standby = QemuHost(config, paths.lab_dir, slot="standby")
        self.extra_files: dict[str, Path] = {}
        # One pin per boot: the port changes every time, so the file is rewritten each boot.
        self._known = KnownHosts(self.dir / "known_hosts")

    @property
    def known_hosts(self) -> KnownHosts:
        return self._known

    def target(self) -> SshTarget:
        state = self.qemu.state()
        if state is None:
            raise HostDown(f"{self.name}: QEMU is not running (start it with `kbisect lab.up`)")
        return SshTarget(self.name, "127.0.0.1", state.port, "root", self.paths.key_path)

    def _boot(self, artifact: Artifact, deadline: Deadline) -> str | None:
        self._start(artifact)
        return None

    def _power_cycle(self, artifact: Artifact, deadline: Deadline) -> bool:
        self._start(artifact)  # a fresh QEMU boots the build: power cycle and deploy in one
        return True

    def _start(self, artifact: Artifact) -> None:
        staged = self.standby.state()
        try:
            if staged is not None and staged.build_key == artifact.key:
                self.say(f"{self.name}: switching to {artifact.key}, booted on standby")
                state = self.qemu.promote(self.standby, Deadline(self.config.boot_timeout))
            else:
                self.standby.stop()
                self.say(f"{self.name}: booting Xen + dom0 {artifact.key} under QEMU")
                state = self.qemu.start(artifact, *self._boot_inputs(artifact))
        except InfraError as exc:
            raise HostDown(str(exc)) from None
        self._known.writable.unlink(missing_ok=True)
        self._known.add("127.0.0.1", state.port, parse_public_key(state.host_key_pub))

    def _boot_inputs(self, artifact: Artifact) -> tuple[str, dict[str, Path], str]:
        return self.paths.public_key, self.extra_files, f"{BUILD_PARAM}={artifact.key}"

    def stage(self, artifact: Artifact) -> bool:
        if not standby_wanted(self.qemu.opts):
            return False
        staged = self.standby.state()
        if staged is not None and staged.build_key == artifact.key:
            return True
        self.say(f"{self.name}: booting {artifact.key} on standby, for the next deploy")
        try:
            self.standby.launch(artifact, *self._boot_inputs(artifact), background=True)
        except InfraError as exc:  # only a missed shortcut: the deploy boots it the slow way
            self.say(f"{self.name}: cannot boot on standby: {exc}")
            return False
        return True

    def check_alive(self) -> None:
        if self.qemu.state() is None:
            raise HostDown(
                f"{self.name}: QEMU is not running (it exited, was killed, or was never started)"
                + self._console_note(25)
            )

    def console_log(self) -> Path | None:
        return self.qemu.console_log

    def _known_facts(self) -> dict[str, str]:
        return {"xen_cmdline": xen_cmdline(self.qemu.opts)}

    def shutdown(self) -> bool:
        standby = self.standby.stop()
        return self.qemu.stop() or standby


# ---------------------------------------------------------------------------------------------
# Rack machines


class RackHost(LabHost):
    """A machine running Xen, reached over SSH and booted through grub2."""

    kind = "ssh"

    def __init__(self, config: Host, paths: LabPaths, say: Say = _quiet) -> None:
        super().__init__(config, paths, say)
        assert config.ssh is not None  # the config loader guarantees it for kind ssh
        self.ssh: SshOptions = config.ssh
        self._known = KnownHosts(paths.rack_known_hosts)

    @property
    def known_hosts(self) -> KnownHosts:
        return self._known

    def target(self) -> SshTarget:
        key = Path(self.ssh.key).expanduser() if self.ssh.key else self.paths.key_path
        return SshTarget(self.name, self.ssh.address, self.ssh.port, self.ssh.user, key)

    def console_log(self) -> Path | None:
        return None  # a serial-over-LAN capture would go here

    def entry_id(self, artifact: Artifact) -> str:
        return f"kbisect-{artifact.key}"

    def _boot(self, artifact: Artifact, deadline: Deadline) -> str | None:
        try:
            session = self.connect(deadline)
        except HostDown:
            self.say(f"{self.name}: not answering before the deploy")
            raise
        with session:
            before = self.probe(session)
            self._install(session, artifact, before, deadline)
            self.say(f"{self.name}: rebooting into {self.entry_id(artifact)}")
            self._reboot(session)
        return before.get("boot_id") or None

    def _install(
        self, session: SshSession, artifact: Artifact, before: Probe, deadline: Deadline
    ) -> None:
        release = str(artifact.meta.get("kernel_release", ""))
        if not release:
            raise InfraError(f"build {artifact.key} has no kernel_release in its meta.json")
        boot = self.ssh.boot_dir.rstrip("/") or "/"
        kernel = f"{boot}/vmlinuz-kbisect-{artifact.key}"
        initrd = f"{boot}/initrd.img-kbisect-{artifact.key}"
        self._run(session, ["mkdir", "-p", boot, self.ssh.modules_dir], "preparing directories")
        # Only the build being deployed stays installed: /boot is small on most machines.
        self._run_sh(
            session,
            'for f in "$1"/vmlinuz-kbisect-* "$1"/initrd.img-kbisect-*; do '
            'case "$f" in *"$2") ;; *) rm -f "$f" ;; esac; done',
            [boot, artifact.key],
            "removing older kbisect kernels",
        )
        session.upload(artifact.bzimage, kernel, deadline, mode=0o644)
        tarball = self.dir / "modules.tar.gz"
        _pack_modules(artifact, release, tarball)
        token = secrets.token_hex(4)
        remote_tar = f"/tmp/kbisect-modules-{artifact.key}-{token}.tar.gz"  # noqa: S108
        session.upload(tarball, remote_tar, deadline)
        tarball.unlink(missing_ok=True)
        self._run_sh(
            session,
            'rm -rf "$2/$3" && tar -xzf "$1" -C "$2" && rm -f "$1"',
            [remote_tar, self.ssh.modules_dir, release],
            "installing modules",
        )
        has_initrd = self.ssh.commands.initrd is not None
        if self.ssh.commands.initrd is not None:
            argv = [
                w.replace("{release}", release).replace("{output}", initrd)
                for w in self.ssh.commands.initrd
            ]
            self._run(session, argv, "building the initrd", Deadline(300))
        script = grub_script(
            self.entry_id(artifact),
            artifact.key,
            release,
            xen=self.ssh.xen_image,
            xen_cmdline=self.ssh.xen_cmdline,
            kernel=kernel,
            initrd=initrd if has_initrd else None,
            dom0_cmdline=self._dom0_cmdline(before, artifact),
            boot_mount=self._mount_point(session, boot),
        )
        session.upload_bytes(script.encode(), self.ssh.grub_script, deadline, mode=0o755)
        self._run(session, self.ssh.commands.update_grub, "updating grub", Deadline(300))
        if self.ssh.grub_fallback_entry:
            self._run(
                session,
                [*self.ssh.commands.grub_set_default, self.ssh.grub_fallback_entry],
                "setting the fallback grub entry",
            )
        self._run(
            session,
            [*self.ssh.commands.grub_reboot, self.entry_id(artifact)],
            "arming the one-time grub entry",
        )

    def _dom0_cmdline(self, before: Probe, artifact: Artifact) -> str:
        if self.ssh.dom0_cmdline is not None:
            words = self.ssh.dom0_cmdline.split()
        else:
            words = [
                w
                for w in before.get("dom0_cmdline").split()
                if not w.startswith(("BOOT_IMAGE=", f"{BUILD_PARAM}=", "initrd="))
            ]
        return " ".join([*words, f"{BUILD_PARAM}={artifact.key}"])

    def _mount_point(self, session: SshSession, path: str) -> str:
        result = session.run(["df", "-P", path], Deadline(_SHORT))
        lines = result.text().splitlines()
        if not result.ok or len(lines) < 2:
            return "/"
        return lines[-1].split()[-1]

    def _reboot(self, session: SshSession) -> None:
        # The connection may drop before the command answers: that is the reboot working.
        with contextlib.suppress(InfraError):
            result = session.run(self.ssh.commands.reboot, Deadline(30))
            if not result.ok:
                raise InfraError(
                    f"{self.name}: {shlex.join(self.ssh.commands.reboot)} failed "
                    f"({result.status}): {result.stderr.decode(errors='replace').strip()[-200:]}"
                )

    def _power_cycle(self, artifact: Artifact, deadline: Deadline) -> bool:
        argv = self.ssh.power_cycle
        if not argv:
            raise HostDown(f"{self.name}: not answering and no power_cycle command is configured")
        try:
            processes.run(argv, deadline=max(deadline.remaining(), 1))
        except CommandError as exc:
            raise HostDown(f"{self.name}: power_cycle command: {exc}") from exc
        return False  # it boots whatever grub picks: the armed entry, or the fallback

    def _run(
        self, session: SshSession, argv: list[str], what: str, deadline: Deadline | None = None
    ) -> None:
        result = session.run(argv, deadline or Deadline(_SHORT))
        if not result.ok:
            raise InfraError(
                f"{self.name}: {what} failed: `{shlex.join(argv)}` exited {result.status}: "
                f"{result.stderr.decode(errors='replace').strip()[-300:]}"
            )

    def _run_sh(self, session: SshSession, script: str, args: list[str], what: str) -> None:
        self._run(session, ["sh", "-c", script, "sh", *args], what)


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _pack_modules(artifact: Artifact, release: str, out: Path) -> None:
    """lib/modules/RELEASE of the build as RELEASE/... in a gzip'd tarball."""
    tree = artifact.modules / "lib" / "modules" / release
    if not tree.is_dir():
        raise InfraError(f"build {artifact.key} has no modules for {release} ({tree})")
    with tarfile.open(out, "w:gz", compresslevel=1) as tar:
        tar.add(tree, arcname=release)


def _grub_path(path: str, mount: str) -> str:
    """A path as grub sees it: relative to the root of the partition holding it."""
    if mount in ("", "/"):
        return path
    return "/" + path[len(mount) :].lstrip("/") if path.startswith(mount + "/") else path


def grub_script(
    entry_id: str,
    build_key: str,
    release: str,
    *,
    xen: str,
    xen_cmdline: str,
    kernel: str,
    initrd: str | None,
    dom0_cmdline: str,
    boot_mount: str,
) -> str:
    """The grub.d script: one menu entry booting Xen with the build as dom0 (update-grub runs
    it and copies its output into grub.cfg)."""
    k = _grub_path(kernel, boot_mount)
    lines = [
        f"menuentry 'kbisect {build_key}: Xen, dom0 {release}' --id {entry_id} {{",
        "\tinsmod part_gpt",
        "\tinsmod part_msdos",
        "\tinsmod ext2",
        "\tinsmod multiboot2",
        f"\tsearch --no-floppy --file --set=root {k}",
        f"\techo 'kbisect: loading Xen and dom0 {release}'",
        f"\tmultiboot2 {_grub_path(xen, boot_mount)} {xen_cmdline}".rstrip(),
        f"\tmodule2 {k} {dom0_cmdline}".rstrip(),
    ]
    if initrd:
        lines.append(f"\tmodule2 --nounzip {_grub_path(initrd, boot_mount)}")
    lines.append("}")
    body = "\n".join(lines)
    return (
        "#!/bin/sh\n"
        f"# Written by kbisect for build {build_key}; replaced by the next deploy.\n"
        "# Booted once with grub-reboot, so a hang falls back to the default entry.\n"
        "cat <<'KBISECT_ENTRY'\n"
        f"{body}\n"
        "KBISECT_ENTRY\n"
    )


def make_host(config: Host, paths: LabPaths, say: Say = _quiet) -> LabHost:
    """The driver for a host's kind."""
    if config.kind == "qemu":
        return EmbeddedHost(config, paths, say)
    return RackHost(config, paths, say)


__all__ = [
    "BootMismatch",
    "Deployment",
    "EmbeddedHost",
    "HostBroken",
    "HostDown",
    "LabHost",
    "LabPaths",
    "Probe",
    "RackHost",
    "grub_script",
    "make_host",
]
