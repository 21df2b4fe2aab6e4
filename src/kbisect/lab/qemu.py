"""The embedded Xen host: Xen 4.17 from Debian booted by QEMU (TCG) with a build's bzImage as PV
dom0 and a kbisect initramfs, SSH forwarded to a free loopback port, the serial console in a log.

Deploy = build the initramfs and (re)start QEMU; power = the QEMU process. The QEMU process is
started in its own session and recorded (PID, port, what it booted) in the host's state file, so
`lab.down` or a later run can end it by PID.

A host may also have a standby QEMU (its `standby/` directory): the next build, booting while a job
still runs on the current one. Deploying that build then waits for the standby and promotes it,
instead of booting from scratch. The standby runs under SCHED_IDLE; still, a boot beside a job
slows the job where the machine has no cores to spare, hence `qemu.standby: auto`.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import socket
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from kbisect import processes
from kbisect.build.store import Artifact
from kbisect.config.model import Host, QemuOptions
from kbisect.deadline import Deadline
from kbisect.errors import InfraError
from kbisect.lab.initramfs import READY_MARKER, InitramfsInputs, build_initramfs
from kbisect.lab.protocol import KernelDidNotBoot
from kbisect.processes import STDOUT, Child, command_line, end_pid

QEMU = "qemu-system-x86_64"
PROC_MARKER = "kbisect-lab."  # in QEMU's -name, so a recycled PID is never mistaken for ours

# What Xen prints when dom0 dies; it then reboots the machine, and QEMU (-no-reboot) exits.
DOM0_CRASHED = "Hardware Dom0 crashed"


@dataclass(frozen=True)
class BootInputs:
    """What a boot takes besides the build: the key authorized to log in, files for the
    initramfs (path in the image -> file here), and words appended to the dom0 command line
    (kbisect puts the build key there)."""

    authorized_key: str
    extra_files: dict[str, Path] = field(default_factory=dict)
    cmdline_extra: str = ""


@dataclass
class QemuState:
    pid: int
    port: int
    console: str
    build_key: str
    started: float
    host_key_pub: str


def xen_image(opts: QemuOptions, lab_dir: Path) -> Path:
    """QEMU's -kernel needs the ELF image: gunzip Debian's xen-*.gz once."""
    src = Path(opts.xen_image)
    if not src.exists():
        raise InfraError(f"{src} is missing (./bootstrap installs xen-hypervisor-4.17-amd64)")
    if src.suffix != ".gz":
        return src
    out = lab_dir / src.stem
    if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
        partial = out.with_suffix(".partial")
        with gzip.open(src, "rb") as fin, partial.open("wb") as fout:
            shutil.copyfileobj(fin, fout)
        partial.rename(out)
    return out


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def dom0_cmdline(opts: QemuOptions, extra: str = "") -> str:
    parts = ["console=hvc0", "earlyprintk=xen", "panic=-1"]
    if opts.numa_fake:
        parts.append(f"numa=fake={opts.numa_fake}")
    if opts.numa_balancing:
        parts.append("numa_balancing=enable")
    if opts.extra_dom0_cmdline:
        parts.append(opts.extra_dom0_cmdline)
    if extra:
        parts.append(extra)
    return " ".join(parts)


def multiboot_modules(*modules: tuple[Path, str]) -> str:
    """QEMU's -initrd for a multiboot kernel (Xen): the modules, each a file and its command
    line, separated by commas. A comma inside one (`console=ttyS0,115200` in
    `extra_dom0_cmdline`) is doubled: QEMU reads `,,` as a comma, a single one as the start of
    the next module."""
    parts = [f"{path} {cmdline}".rstrip() for path, cmdline in modules]
    return ",".join(part.replace(",", ",,") for part in parts)


def standby_wanted(opts: QemuOptions) -> bool:
    """Whether an embedded host boots the next build on a standby QEMU (`qemu.standby`)."""
    if opts.standby == "auto":
        return (os.cpu_count() or 1) >= 2 * opts.cpus
    return opts.standby == "on"


def xen_cmdline(opts: QemuOptions) -> str:
    mem = opts.dom0_memory_mb
    return f"console=com1 dom0_mem={mem}M,max:{mem}M loglvl=all guest_loglvl=all"


class QemuHost:
    """One QEMU of an embedded host: its directory holds the initramfs, console and state.

    The host's own QEMU lives in cache/lab/HOST, a standby in cache/lab/HOST/standby; both use
    the host's dropbear key, so a promoted standby answers with the pinned key."""

    def __init__(self, host: Host, lab_dir: Path, slot: str = "") -> None:
        self.host = host
        self.opts = host.qemu_options()
        self.home = lab_dir / host.name
        self.dir = self.home / slot if slot else self.home
        self.dir.mkdir(parents=True, exist_ok=True)
        self.lab_dir = lab_dir
        self._proc: Child | None = None

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def console_log(self) -> Path:
        return self.dir / "console.log"

    def host_key(self) -> tuple[Path, str]:
        """The dropbear host key kbisect generated for this host, and its OpenSSH public line."""
        key = self.home / "dropbear_ed25519_host_key"
        if not key.exists():
            _dropbearkey("-t", "ed25519", "-f", str(key))
        pub = _dropbearkey("-y", "-f", str(key))
        line = next(ln for ln in pub.splitlines() if ln.startswith("ssh-ed25519 "))
        return key, " ".join(line.split()[:2])

    def state(self) -> QemuState | None:
        """The running QEMU, or None (a stale state file of a dead QEMU is removed)."""
        try:
            state = QemuState(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        if not _is_our_qemu(state.pid, self.host.name):
            self.state_file.unlink(missing_ok=True)
            return None
        return state

    def start(self, artifact: Artifact, inputs: BootInputs) -> QemuState:
        """(Re)start QEMU with this build; returns once the console says SSH is up."""
        state = self.launch(artifact, inputs)
        self.wait_ready(state, Deadline(self.host.boot_timeout))
        return state

    def launch(
        self, artifact: Artifact, inputs: BootInputs, *, background: bool = False
    ) -> QemuState:
        """(Re)start QEMU with this build and return at once; `wait_ready` waits for the boot.

        `background` runs it under SCHED_IDLE, so that a standby's boot takes only what the
        running job leaves: under TCG a job's vCPUs that lose their core to another QEMU wait on
        each other (TLB shootdown IPIs) and a 1 s subtest took 9 s. A waking vCPU preempts a
        SCHED_IDLE thread at once, where it would wait its turn behind a merely nice one."""
        self.stop()
        host_key, host_pub = self.host_key()
        initrd = self.dir / "initramfs.gz"
        build_initramfs(
            InitramfsInputs(
                modules=artifact.modules,
                host_key=host_key,
                authorized_key=inputs.authorized_key,
                build_identity=artifact.key,
                extra_files=inputs.extra_files,
            ),
            initrd,
            self.dir,
        )
        xen = xen_image(self.opts, self.lab_dir)
        port = free_port()
        self.console_log.unlink(missing_ok=True)
        modules = multiboot_modules(
            (artifact.bzimage, dom0_cmdline(self.opts, inputs.cmdline_extra)), (initrd, "")
        )
        argv = [
            *(["chrt", "--idle", "0"] if background else []),
            QEMU,
            "-name",
            f"{PROC_MARKER}{self.host.name}",
            "-accel",
            "tcg",
            "-m",
            str(self.opts.memory_mb),
            "-smp",
            str(self.opts.cpus),
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
            "-serial",
            f"file:{self.console_log}",
            "-kernel",
            str(xen),
            "-append",
            xen_cmdline(self.opts),
            "-initrd",
            modules,
            "-netdev",
            f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22",
            "-device",
            "e1000,netdev=n0",
        ]
        if shutil.which(QEMU) is None:
            raise InfraError(f"{QEMU} is missing (./bootstrap installs qemu-system-x86)")
        with (self.dir / "qemu.log").open("w") as qlog:
            # Not tracked: QEMU outlives the command that started it (`lab.up`); it is ended
            # by the PID in its state file.
            proc = processes.start(argv, stdout=qlog, stderr=STDOUT, track=False)
        state = QemuState(
            proc.pid, port, str(self.console_log), artifact.key, time.time(), host_pub
        )
        self._proc = proc
        self._write_state(state)
        return state

    def _write_state(self, state: QemuState) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state)))
        tmp.rename(self.state_file)

    def wait_ready(self, state: QemuState, deadline: Deadline) -> None:
        """Wait for the console's ready marker; a QEMU that exits or a deadline that passes
        first ends this QEMU and raises InfraError with the console's tail."""
        try:
            self._wait_ready(state, deadline)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, state: QemuState, deadline: Deadline) -> None:
        marker = f"{READY_MARKER} {state.build_key}"
        while not deadline.expired:
            exited = self._exit_status(state)
            if exited is not None and DOM0_CRASHED in self.console_text():
                raise KernelDidNotBoot(  # the kernel's failure, not the lab's: a FAIL
                    f"kernel did not boot: dom0 {state.build_key} crashed under Xen on "
                    f"{self.host.name} (Xen: {DOM0_CRASHED!r}); console: {self.console_log}\n"
                    f"{self.console_tail()}",
                    self.console_log,
                )
            if exited is not None:
                qemu_said = (self.dir / "qemu.log").read_text(errors="replace").strip()
                raise InfraError(
                    f"QEMU for {self.host.name} exited ({exited}) during boot: "
                    f"{qemu_said[-300:]}; console: {self.console_log}\n{self.console_tail()}"
                )
            if marker in self.console_text():
                return
            time.sleep(0.2)
        raise InfraError(
            f"{self.host.name} did not boot within {deadline.seconds:g} s; console: "
            f"{self.console_log}\n{self.console_tail()}"
        )

    def _exit_status(self, state: QemuState) -> str | None:
        """How QEMU ended, or None while it runs (a QEMU another process started has no
        Child here: then its /proc entry tells)."""
        if self._proc is not None and self._proc.pid == state.pid:
            code = self._proc.poll()
            return None if code is None else str(code)
        return None if _is_our_qemu(state.pid, self.host.name) else "gone"

    def promote(self, standby: QemuHost, deadline: Deadline) -> QemuState:
        """Make the standby's QEMU this one: end ours, wait for the standby's boot, and move
        its console and state here. Raises InfraError (standby ended) if it does not boot."""
        state = standby.state()
        if state is None:
            raise InfraError(f"{self.host.name}: the standby QEMU is not running")
        self.stop()  # idle now, and its CPU is better spent on the standby's boot
        standby.wait_ready(state, deadline)
        self.console_log.unlink(missing_ok=True)
        standby.console_log.rename(self.console_log)  # QEMU keeps writing to the same file
        for name in ("qemu.log", "files.txt"):
            with contextlib.suppress(FileNotFoundError):
                (standby.dir / name).replace(self.dir / name)
        _foreground(state.pid)  # the host's own QEMU now: normal scheduling again
        moved = replace(state, console=str(self.console_log))
        self._write_state(moved)
        standby.state_file.unlink(missing_ok=True)
        self._proc, standby._proc = standby._proc, None
        return moved

    def stop(self) -> bool:
        """End the running QEMU by its PID (TERM, then KILL); True if one was running."""
        state = self.state()
        if state is None:
            return False
        end_pid(state.pid)  # reaps it too when it is our child
        self._proc = None
        self.state_file.unlink(missing_ok=True)
        return True

    def console_text(self) -> str:
        try:
            return self.console_log.read_text(errors="replace")
        except OSError:
            return ""

    def console_tail(self, lines: int = 25) -> str:
        return "\n".join(self.console_text().splitlines()[-lines:])


def _dropbearkey(*args: str) -> str:
    argv = ["dropbearkey", *args]
    return processes.run(argv, deadline=60, hint="./bootstrap installs dropbear-bin").stdout


def _foreground(pid: int) -> None:
    """Normal scheduling (SCHED_OTHER) for every thread of a process: the policy is per thread
    on Linux, and QEMU's threads inherited SCHED_IDLE from `chrt`."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return  # gone: the next SSH login finds out
    for task in tasks:
        with contextlib.suppress(ProcessLookupError):
            os.sched_setscheduler(int(task.name), os.SCHED_OTHER, os.sched_param(0))


def _is_our_qemu(pid: int, name: str) -> bool:
    # command_line reads again while chrt becomes QEMU, so a booting standby is not taken for
    # a dead one.
    return f"{PROC_MARKER}{name}" in (command_line(pid) or [])
