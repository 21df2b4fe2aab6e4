"""Real SSH test hosts: sshd or dropbear, each in its own network namespace on a veth pair.

`NetnsLab` makes namespaces named `kbt-<pid>-<random>` with a veth pair in a free /30 of
10.231.0.0/16 (an address range used only inside these namespaces), starts a server inside with
`ip netns exec`, and on `close()` kills each server by its PID and deletes namespace and veth.
Namespaces left behind by a test run that was killed (its pid is gone) are swept on start.

Two kinds of host:

- `openssh`: /usr/sbin/sshd with a per-run ed25519 host key and an authorized key for root.
- `dropbear`: dropbear with a busybox-only userland, like the embedded Xen host: in the server's
  private mount namespace a directory of busybox applets is bind-mounted over /usr/bin (so /bin),
  empty directories over /usr/sbin and /usr/local/bin, and root's login shell is busybox sh.

Each host has a `shim_dir`, bind-mounted over /usr/local/sbin (first on the servers' PATH and
empty on this machine), where a test can put a stand-in for a command.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from kbisect.lab.ssh import SshTarget, generate_keypair
from kbisect.processes import pid_alive

SUBNET = ipaddress.ip_network("10.231.0.0/16")
PREFIX = "kbt-"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def _kill_and_reap(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, one PID; waits (bounded) until it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + timeout
    while time.monotonic() < end and pid_alive(pid) and not _is_zombie(pid):
        time.sleep(0.05)
    if pid_alive(pid) and not _is_zombie(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def children(pid: int) -> set[int]:
    """PIDs whose parent is pid."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if int(fields[1]) == pid:
            found.add(int(entry.name))
    return found


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children(todo.pop()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def sweep_stale_namespaces() -> None:
    """Remove kbt- namespaces of test runs that no longer exist (killing what runs inside)."""
    listing = _ip("netns", "list", check=False).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        match = re.fullmatch(rf"{PREFIX}(\d+)-[0-9a-f]+", name)
        if match is None or pid_alive(int(match.group(1))):
            continue
        pids = _ip("netns", "pids", name, check=False).stdout.split()
        for pid in pids:
            if pid.isdigit():
                _kill_and_reap(int(pid))
        _ip("netns", "del", name, check=False)


def _free_subnet() -> ipaddress.IPv4Network:
    """A /30 of SUBNET that no address or route on this machine touches yet."""
    shown = _ip("-4", "route", "show").stdout + _ip("-4", "addr", "show").stdout
    used = [
        ipaddress.ip_network(text, strict=False)
        for text in re.findall(r"\b10\.231\.\d+\.\d+(?:/\d+)?", shown)
    ]
    blocks = list(SUBNET.subnets(new_prefix=30))
    for _ in range(200):
        block = random.choice(blocks)
        if not any(block.overlaps(other) for other in used):
            return block
    raise RuntimeError(f"no free /30 in {SUBNET}")


@dataclass
class SshHost:
    """One server in one namespace."""

    name: str
    kind: str
    namespace: str
    address: str
    port: int
    host_key: paramiko.PKey
    server_pid: int
    shim_dir: Path
    log: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    def target(self, key_path: Path, name: str | None = None) -> SshTarget:
        return SshTarget(name or self.name, self.address, self.port, "root", key_path)

    def connection_processes(self) -> set[int]:
        """Server processes below the listener (per connection), by PID."""
        wanted = {"sshd", "dropbear"}
        found = set()
        for pid in descendants(self.server_pid):
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if comm in wanted:
                found.add(pid)
        return found


class NetnsLab:
    """Namespaces and servers made by one test module; `close()` removes them all."""

    def __init__(self, workdir: Path, authorized_key: Path) -> None:
        if os.geteuid() != 0:
            raise RuntimeError("network namespaces need root")
        sweep_stale_namespaces()
        self.workdir = workdir
        self.authorized_key = authorized_key
        self.hosts: list[SshHost] = []
        self._namespaces: list[tuple[str, str]] = []
        self._processes: list[subprocess.Popen[bytes]] = []

    # -- namespaces ------------------------------------------------------------------------

    def _namespace(self) -> tuple[str, str]:
        token = secrets.token_hex(4)
        namespace = f"{PREFIX}{os.getpid()}-{token}"
        outside, inside = f"kbh{token}", f"kbn{token}"
        block = _free_subnet()
        host_ip, ns_ip = str(block.network_address + 1), str(block.network_address + 2)
        _ip("netns", "add", namespace)
        self._namespaces.append((namespace, outside))
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside, "netns", namespace)
        _ip("addr", "add", f"{host_ip}/30", "dev", outside)
        _ip("link", "set", outside, "up")
        _ip("-n", namespace, "addr", "add", f"{ns_ip}/30", "dev", inside)
        _ip("-n", namespace, "link", "set", inside, "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        return namespace, ns_ip

    def _start(self, namespace: str, script: str, args: list[str], log: Path) -> int:
        with log.open("wb") as out:
            process = subprocess.Popen(
                ["ip", "netns", "exec", namespace, "sh", "-c", script, "sh", *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self._processes.append(process)
        return process.pid

    def _wait_for_port(self, process: subprocess.Popen[bytes], address: str, port: int) -> None:
        end = time.monotonic() + 15
        while time.monotonic() < end:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}")
            with contextlib.suppress(OSError), socket.create_connection((address, port), 0.5):
                return
            time.sleep(0.05)
        raise RuntimeError(f"nothing listens on {address}:{port} after 15 s")

    # -- servers ---------------------------------------------------------------------------

    def add_openssh(self, name: str, port: int = 22, machine: Path | None = None) -> SshHost:
        """An sshd host. With `machine` (see `FakeMachine`), the server's mount namespace shows
        that directory's files as the boot id, /proc/cmdline and /sys, so a test can play a
        machine that reboots into other kernels."""
        namespace, address = self._namespace()
        base = self.workdir / name
        base.mkdir(parents=True)
        host_key = generate_keypair(base / "ssh_host_ed25519_key", comment=f"{name}-host")
        shim = base / "shim"
        shim.mkdir()
        config = base / "sshd_config"
        config.write_text(
            f"ListenAddress {address}\n"
            f"Port {port}\n"
            f"HostKey {base / 'ssh_host_ed25519_key'}\n"
            f"PidFile {base / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.authorized_key}\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "UseDNS no\n"
            "LogLevel VERBOSE\n"
        )
        # ip netns exec gives the command its own mount namespace (/ made a slave), so these
        # mounts are the server's alone: a tmpfs /run for sshd's privilege-separation directory
        # and the shim directory over the (empty) /usr/local/sbin, first on sshd's PATH.
        script = (
            "set -e; mount -t tmpfs -o mode=0755 kbt-run /run; mkdir /run/sshd; "
            'mount --bind "$1" /usr/local/sbin; '
            'if [ -n "$3" ]; then mount --bind "$3/boot_id" /proc/sys/kernel/random/boot_id; '
            'mount --bind "$3/cmdline" /proc/cmdline; mount --bind "$3/sys" /sys; fi; '
            'exec /usr/sbin/sshd -D -e -f "$2"'
        )
        log = base / "server.log"
        args = [str(shim), str(config), str(machine) if machine else ""]
        pid = self._start(namespace, script, args, log)
        host = SshHost(
            name, "openssh", namespace, address, port, host_key, pid, shim, log,
            self._processes[-1],
        )  # fmt: skip
        self._ready(host)
        return host

    def add_dropbear(self, name: str, port: int = 2222) -> SshHost:
        namespace, address = self._namespace()
        base = self.workdir / name
        base.mkdir(parents=True)
        hostkey = base / "dropbear_ed25519_host_key"
        subprocess.run(
            ["dropbearkey", "-t", "ed25519", "-f", str(hostkey)],
            capture_output=True, timeout=30, check=True,
        )  # fmt: skip
        shown = subprocess.run(
            ["dropbearkey", "-y", "-f", str(hostkey)],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
        line = next(x for x in shown.splitlines() if x.startswith("ssh-ed25519 "))
        host_key = _public_key(line)
        # busybox userland
        bbdir = base / "busybox"
        bbdir.mkdir()
        shutil.copy2("/bin/busybox", bbdir / "busybox")
        applets = subprocess.run(
            [str(bbdir / "busybox"), "--list"], capture_output=True, text=True, timeout=30,
            check=True,
        ).stdout.split()  # fmt: skip
        for applet in applets:
            if applet != "busybox":
                (bbdir / applet).symlink_to("busybox")
        shim = base / "shim"
        shim.mkdir()
        home = base / "home"
        (home / ".ssh").mkdir(parents=True)
        shutil.copy(self.authorized_key, home / ".ssh" / "authorized_keys")
        passwd = base / "passwd"
        lines = []
        for entry in Path("/etc/passwd").read_text().splitlines():
            if entry.startswith("root:"):
                entry = f"root:x:0:0:root:{home}:/bin/sh"
            lines.append(entry)
        passwd.write_text("\n".join(lines) + "\n")
        dropbear = base / "dropbear"
        shutil.copy2("/usr/sbin/dropbear", dropbear)
        empty = base / "empty"
        empty.mkdir()
        # dropbear's PATH: /usr/local/sbin (the shims), /usr/local/bin and /usr/sbin (empty
        # here), /usr/bin = /bin (busybox). Mount the busybox directory last: then even this
        # script's `mount` and `exec` are busybox's.
        script = (
            'set -e; mount --bind "$1" /etc/passwd; mount --bind "$2" /usr/local/sbin; '
            'mount --bind "$3" /usr/local/bin; mount --bind "$3" /usr/sbin; '
            'mount --bind "$4" /usr/bin; '
            'exec "$5" -F -E -s -p "$6" -r "$7" -P "$8"'
        )
        args = [
            str(passwd), str(shim), str(empty), str(bbdir), str(dropbear), f"{address}:{port}",
            str(hostkey), str(base / "dropbear.pid"),
        ]  # fmt: skip
        log = base / "server.log"
        pid = self._start(namespace, script, args, log)
        host = SshHost(
            name, "dropbear", namespace, address, port, host_key, pid, shim, log,
            self._processes[-1],
        )  # fmt: skip
        self._ready(host)
        return host

    def _ready(self, host: SshHost) -> None:
        try:
            self._wait_for_port(host.process, host.address, host.port)
        except RuntimeError as exc:
            raise RuntimeError(f"{host.kind} {host.name}: {exc}\n{host.log.read_text()}") from None
        exe = Path(f"/proc/{host.server_pid}/exe").readlink()
        assert exe.name in {"sshd", "dropbear"}, exe
        self.hosts.append(host)

    # -- teardown --------------------------------------------------------------------------

    def close(self) -> None:
        for process in self._processes:
            for pid in descendants(process.pid):
                _kill_and_reap(pid)
            _kill_and_reap(process.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
        self._processes.clear()
        for namespace, outside in self._namespaces:
            # whatever still runs in the namespace was started by a test (a job left running)
            for pid in _ip("netns", "pids", namespace, check=False).stdout.split():
                if pid.isdigit():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
            _ip("netns", "del", namespace, check=False)
            _ip("link", "del", outside, check=False)  # normally gone with its peer
        self._namespaces.clear()


def _public_key(line: str) -> paramiko.PKey:
    key_type, data = line.split()[:2]
    return paramiko.PKey.from_type_string(key_type, base64.b64decode(data))
