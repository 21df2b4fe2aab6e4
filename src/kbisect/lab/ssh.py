"""SSH to lab hosts: pinned host keys, commands with wall-clock deadlines, uploads, detached jobs.

Everything here works against OpenSSH and against dropbear with a busybox userland (the embedded
host): no SFTP/SCP (dropbear has no server for them), and every remote script is plain POSIX sh
that bash, dash and busybox ash all run. User data never reaches a remote shell unquoted: argv is
quoted with shlex, and the fixed scripts below take their data as positional parameters.

How a command is run so that it can be stopped: the login shell starts it in the background under
`setsid`, so it leads a new process group whose id is its PID; the group leader prints that PID as
the first line of stdout and then execs the command. When the deadline passes, a second channel
kills the whole group (TERM, then KILL), and InfraError is raised.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import re
import secrets
import select
import shlex
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import paramiko

from kbisect import processes
from kbisect.closeable import Closeable
from kbisect.deadline import Deadline
from kbisect.errors import InfraError, UserError
from kbisect.progress import advance, byte_progress

SSH_PORT = 22
KEY_TYPE = "ssh-ed25519"
JOBS_DIR = "/tmp/kbisect-jobs"  # noqa: S108 (on the test host, which root alone uses)
_CHUNK = 1 << 16
_SEND_WAIT = 0.05
_KEEPALIVE_SECONDS = 15
_SMALL_OP_SECONDS = 60.0
_KILL_SECONDS = 15.0
_CHANNEL_TRIES = 4
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


# ---------------------------------------------------------------------------------------------
# Host keys


class HostKeyUnknown(InfraError):
    """The host offered a key that no known_hosts file pins."""


class HostKeyChanged(InfraError):
    """The host is pinned to another key: a reinstall, or someone in the middle."""


def fingerprint(key: paramiko.PKey) -> str:
    """The key's fingerprint as OpenSSH prints it: `SHA256:` and unpadded base64."""
    return key.fingerprint


def host_key_name(host: str, port: int) -> str:
    """How known_hosts names a host: `host` on port 22, `[host]:port` otherwise."""
    return host if port == SSH_PORT else f"[{host}]:{port}"


class KnownHosts:
    """Pinned host keys from OpenSSH known_hosts files (plain or hashed, `[host]:port` entries).

    `readonly` files (such as the one shipped with the lab configuration) are read only; `writable`
    is read too and is where `add` records newly trusted keys. Missing files count as empty.
    """

    def __init__(self, writable: Path, readonly: Iterable[Path] = ()) -> None:
        self.writable = writable
        self.readonly = tuple(readonly)

    @property
    def files(self) -> list[Path]:
        """The existing files, read-only ones first."""
        return [path for path in (*self.readonly, self.writable) if path.exists()]

    @staticmethod
    def _load(path: Path) -> paramiko.HostKeys:
        keys = paramiko.HostKeys()
        try:
            keys.load(str(path))
        except OSError as exc:
            raise UserError(f"cannot read known_hosts file {path}: {exc.strerror}") from None
        except Exception as exc:  # paramiko.hostkeys.InvalidHostKey is not an SSHException
            raise UserError(f"{path}: invalid known_hosts entry: {exc}") from None
        return keys

    def lookup(self, host: str, port: int) -> dict[str, paramiko.PKey]:
        """The pinned keys of host:port by key type (empty when the host is unknown)."""
        name = host_key_name(host, port)
        found: dict[str, paramiko.PKey] = {}
        for path in self.files:
            entries = self._load(path).lookup(name)
            if entries is not None:
                for key_type, key in entries.items():
                    found.setdefault(key_type, key)
        return found

    def pinned_in(self, host: str, port: int) -> list[Path]:
        """The files that pin a key for host:port."""
        name = host_key_name(host, port)
        return [path for path in self.files if self._load(path).lookup(name) is not None]

    def apply(self, client: paramiko.SSHClient) -> None:
        """Give the client every pinned key (as "system" keys, which paramiko never writes)."""
        for path in self.files:
            self._load(path)  # a broken file is a clear UserError, not a paramiko traceback
            client.load_system_host_keys(str(path))

    def add(self, host: str, port: int, key: paramiko.PKey, *, replace: bool = False) -> None:
        """Pin `key` for host:port in the writable file (atomically: temp file + rename).

        A host already pinned to another key is only re-pinned with replace=True, which drops its
        old entries from the writable file; an entry in a read-only file cannot be replaced.
        """
        name = host_key_name(host, port)
        known = self.lookup(host, port)
        if known.get(key.get_name()) == key:
            return
        if known and not replace:
            old = ", ".join(f"{t} {fingerprint(k)}" for t, k in sorted(known.items()))
            raise UserError(
                f"{name} is already pinned to another key ({old}); "
                "replace it only if you know why the host key changed"
            )
        keys = self._load(self.writable) if self.writable.exists() else paramiko.HostKeys()
        if replace:
            while keys.lookup(name) is not None:
                del keys[name]
            fixed = [path for path in self.pinned_in(host, port) if path != self.writable]
            if fixed:
                raise UserError(
                    f"{name} is pinned in {', '.join(map(str, fixed))}, which kbisect does not "
                    "write: change the entry there"
                )
        keys.add(name, key.get_name(), key)
        self.writable.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{self.writable.name}.", suffix=".tmp", dir=self.writable.parent
        )
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            keys.save(str(tmp))
            tmp.chmod(0o644)
            with tmp.open("rb") as f:
                os.fsync(f.fileno())
            tmp.replace(self.writable)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def fetch_host_key(host: str, port: int, deadline: Deadline) -> paramiko.PKey:
    """The host key that host:port offers (ed25519 preferred), for `kbisect lab.trust`.

    Only the key exchange runs: no authentication, nothing is executed.
    """
    where = f"{host} port {port}"
    sock = _open_socket(host, port, deadline, where)
    transport = paramiko.Transport(sock)
    watchdog = _Watchdog(deadline, transport.close)
    try:
        options = transport.get_security_options()
        options.key_types = _prefer(KEY_TYPE, options.key_types)
        transport.banner_timeout = max(deadline.remaining(), 0.1)
        transport.start_client(timeout=max(deadline.remaining(), 0.1))
        return transport.get_remote_server_key()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        if watchdog.fired:
            raise InfraError(f"{where}: no SSH handshake within {deadline.seconds:g} s") from None
        raise InfraError(f"{where}: SSH handshake failed: {_describe(exc)}") from None
    finally:
        watchdog.cancel()
        transport.close()
        sock.close()


def _prefer(first: str, items: Iterable[str]) -> tuple[str, ...]:
    rest = [item for item in items if item != first]
    return (first, *rest)


# ---------------------------------------------------------------------------------------------
# Key pairs


def generate_keypair(path: Path, comment: str = "kbisect") -> paramiko.Ed25519Key:
    """Make an ed25519 key pair (`path` and `path.pub`, the private one mode 0600)."""
    if path.exists():
        raise UserError(f"{path} already exists: kbisect does not overwrite a key")
    path.parent.mkdir(parents=True, exist_ok=True)
    argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)]
    processes.run(argv, deadline=60, hint="Debian package openssh-client")
    path.chmod(0o600)
    return load_private_key(path)


def parse_public_key(line: str) -> paramiko.PKey:
    """A key from an OpenSSH public key line (`ssh-ed25519 AAAA... comment`)."""
    try:
        key_type, data = line.split()[:2]
        return paramiko.PKey.from_type_string(key_type, base64.b64decode(data))
    except (ValueError, paramiko.SSHException, binascii.Error) as exc:
        raise UserError(f"not an OpenSSH public key line: {line[:60]!r} ({exc})") from None


def load_private_key(path: Path) -> paramiko.Ed25519Key:
    """The ed25519 private key in `path` (OpenSSH format, no passphrase)."""
    try:
        return paramiko.Ed25519Key.from_private_key_file(str(path))
    except FileNotFoundError:
        raise UserError(f"SSH key {path} does not exist") from None
    except OSError as exc:
        raise UserError(f"cannot read SSH key {path}: {exc.strerror}") from None
    except paramiko.SSHException as exc:
        raise UserError(f"{path} is not an unencrypted ed25519 private key: {exc}") from None


# ---------------------------------------------------------------------------------------------
# Connections


@dataclass(frozen=True)
class SshTarget:
    """Where and as whom to log in."""

    name: str
    address: str
    port: int
    user: str
    key_path: Path

    @property
    def where(self) -> str:
        return f"{self.name} ({self.user}@{self.address} port {self.port})"


@dataclass(frozen=True)
class CommandResult:
    """A finished remote command: exit status (-1 if the host sent none) and its output."""

    status: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.status == 0

    def text(self) -> str:
        return self.stdout.decode(errors="replace")


@dataclass(frozen=True)
class JobHandle:
    """A detached job on a host; any later session can poll it by this (or by its name)."""

    name: str
    directory: str
    pid: int


@dataclass(frozen=True)
class JobState:
    """running, or finished with an exit status (None: it vanished without one, e.g. a reboot)."""

    running: bool
    status: int | None


@dataclass(frozen=True)
class JobOutput:
    stdout: bytes
    stderr: bytes


class _Watchdog:
    """Runs `action` (closing a socket or transport) once the deadline passes, unless cancelled.

    paramiko's own timeouts bound single reads; this bounds the whole operation.
    """

    def __init__(self, deadline: Deadline, action: Callable[[], object]) -> None:
        self.fired = False
        self._action = action
        self._timer = threading.Timer(deadline.remaining(), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        with contextlib.suppress(Exception):
            self._action()

    def cancel(self) -> None:
        self._timer.cancel()


class _RefuseUnknown(paramiko.RejectPolicy):
    """paramiko's RejectPolicy, remembering the refused key so that the error can show it."""

    def __init__(self) -> None:
        self.offered: paramiko.PKey | None = None

    def missing_host_key(  # type: ignore[override]
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        self.offered = key
        super().missing_host_key(client, hostname, key)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.strip()


def _open_socket(host: str, port: int, deadline: Deadline, where: str) -> socket.socket:
    if deadline.expired:
        raise InfraError(f"{where}: no time left to connect")
    try:
        return socket.create_connection((host, port), timeout=max(deadline.remaining(), 0.1))
    except TimeoutError:
        raise InfraError(f"{where}: no TCP connection within {deadline.seconds:g} s") from None
    except OSError as exc:
        raise InfraError(f"{where}: cannot connect: {exc.strerror or exc}") from None


def _drop(sock: socket.socket) -> None:
    """Cut a connection now: shutdown wakes any thread blocked on the socket."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def connect(target: SshTarget, known_hosts: KnownHosts, deadline: Deadline) -> SshSession:
    """Log in to the target with its ed25519 key, checking the host key against the pins."""
    key = load_private_key(target.key_path)
    where = target.where
    client = paramiko.SSHClient()
    known_hosts.apply(client)
    policy = _RefuseUnknown()
    client.set_missing_host_key_policy(policy)
    sock = _open_socket(target.address, target.port, deadline, where)
    watchdog = _Watchdog(deadline, lambda: _drop(sock))
    try:
        remaining = max(deadline.remaining(), 0.1)
        client.connect(
            target.address,
            port=target.port,
            username=target.user,
            pkey=key,
            sock=sock,
            timeout=remaining,
            banner_timeout=remaining,
            auth_timeout=remaining,
            channel_timeout=remaining,
            allow_agent=False,
            look_for_keys=False,
        )
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise _changed_key(target, known_hosts, exc.key, exc.expected_key) from None
    except paramiko.AuthenticationException as exc:
        client.close()
        raise InfraError(
            f"{where}: the host refused key {target.key_path} ({_describe(exc)})"
        ) from None
    except (paramiko.SSHException, OSError, EOFError) as exc:
        client.close()
        if policy.offered is not None:
            raise _unknown_key(target, policy.offered) from None
        if watchdog.fired:
            raise InfraError(f"{where}: no SSH login within {deadline.seconds:g} s") from None
        raise InfraError(f"{where}: SSH connection failed: {_describe(exc)}") from None
    finally:
        watchdog.cancel()
    if watchdog.fired:
        client.close()
        raise InfraError(f"{where}: no SSH login within {deadline.seconds:g} s")
    transport = client.get_transport()
    if transport is None or not transport.is_active():
        client.close()
        raise InfraError(f"{where}: the SSH connection closed right after login")
    transport.set_keepalive(_KEEPALIVE_SECONDS)
    return SshSession(target, client, transport)


def _unknown_key(target: SshTarget, offered: paramiko.PKey) -> HostKeyUnknown:
    return HostKeyUnknown(
        f"{target.where}: unknown host key {offered.get_name()} {fingerprint(offered)}; "
        f"refusing to connect. Compare it with the host's own fingerprint (on its console: "
        f"ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then trust it with "
        f"`kbisect lab.trust {target.name}`"
    )


def _changed_key(
    target: SshTarget, known_hosts: KnownHosts, offered: paramiko.PKey, expected: paramiko.PKey
) -> HostKeyChanged:
    files = ", ".join(map(str, known_hosts.pinned_in(target.address, target.port))) or "?"
    return HostKeyChanged(
        f"HOST KEY CHANGED for {target.where}! It offered {offered.get_name()} "
        f"{fingerprint(offered)}, but {expected.get_name()} {fingerprint(expected)} is pinned "
        f"(in {files}). Someone may be intercepting the connection, or the host was reinstalled. "
        f"Refusing to connect. Only if the change is expected: remove the old entry and run "
        f"`kbisect lab.trust {target.name}`"
    )


# ---------------------------------------------------------------------------------------------
# Remote scripts. Fixed text; data arrives as positional parameters ("$1", ...).

# Run "$@" as the leader of a new process group, printing its PID first; keep stdin.
_RUN_WRAPPER = (
    'exec 3<&0; setsid sh -c \'echo "kbisect-pid $$"; exec "$@"\' sh {argv} 0<&3 3<&- & wait "$!"'
)
_PID_MARKER = re.compile(rb"kbisect-pid (\d+)")
_PID_SCAN = 1 << 16

# TERM a process group, wait up to ~3 s, then KILL it.
_KILL_GROUP = """
p=$1
kill -TERM -"$p" 2>/dev/null || exit 0
i=0
while [ "$i" -lt 30 ] && kill -0 -"$p" 2>/dev/null; do sleep 0.1; i=$((i+1)); done
kill -KILL -"$p" 2>/dev/null
exit 0
"""

_UPLOAD = """
cat > "$1" || { rm -f "$1"; exit 1; }
sum=$(sha256sum "$1") || { rm -f "$1"; exit 1; }
sum=${sum%% *}
echo "$sum"
if [ "$sum" != "$2" ]; then rm -f "$1"; exit 9; fi
if [ -n "$4" ]; then chmod "$4" "$1" || { rm -f "$1"; exit 1; }; fi
mv -f "$1" "$3"
"""

_DOWNLOAD = 'cat "$1" && sha256sum "$1" >&2'

# The job: a session leader that records its PID (= its process group), runs "$@" with output to
# files and records its exit status. It traps TERM so that it outlives the command when the group
# is stopped and can still record how the command ended.
_JOB_INNER = (
    'd=$1; shift; echo "$$" > "$d/pid.part" && mv -f "$d/pid.part" "$d/pid" || exit 1; '
    'trap : TERM; "$@" > "$d/stdout" 2> "$d/stderr" < /dev/null; '
    'echo "$?" > "$d/status.part"; mv -f "$d/status.part" "$d/status"'
)

_JOB_START = """
d=$1; shift
if [ -f "$d/pid" ] && [ ! -f "$d/status" ] && kill -0 -"$(cat "$d/pid")" 2>/dev/null; then
    echo "a job is still running in $d" >&2; exit 4
fi
rm -rf "$d" && mkdir -p "$d" && cd "$d" || exit 1
setsid sh -c @INNER@ sh "$d" "$@" > /dev/null 2>&1 < /dev/null &
i=0
while [ ! -f "$d/pid" ] && [ "$i" -lt 300 ] && kill -0 "$!" 2>/dev/null; do
    sleep 0.05; i=$((i+1))
done
[ -f "$d/pid" ] || { echo "the job did not start (is setsid there?)" >&2; exit 1; }
cat "$d/pid"
""".replace("@INNER@", shlex.quote(_JOB_INNER))

# $2: tenths of a second to linger for the job to end, so one round trip notices an end at once
_JOB_POLL = """
d=$1; n=${2:-0}
while :; do
    if [ -f "$d/status" ]; then echo "done $(cat "$d/status")"; exit 0; fi
    if [ ! -f "$d/pid" ]; then echo missing; exit 0; fi
    if ! kill -0 -"$(cat "$d/pid")" 2>/dev/null; then
        if [ -f "$d/status" ]; then echo "done $(cat "$d/status")"; exit 0; fi
        echo lost; exit 0
    fi
    [ "$n" -gt 0 ] || { echo running; exit 0; }
    sleep 0.2; n=$((n-2))
done
"""

_JOB_STOP = """
d=$1
[ -f "$d/pid" ] || exit 0
p=$(cat "$d/pid")
[ -f "$d/status" ] && exit 0
kill -TERM -"$p" 2>/dev/null
i=0
while [ "$i" -lt 50 ] && kill -0 -"$p" 2>/dev/null; do sleep 0.1; i=$((i+1)); done
kill -KILL -"$p" 2>/dev/null
i=0
while [ "$i" -lt 20 ] && kill -0 -"$p" 2>/dev/null; do sleep 0.1; i=$((i+1)); done
[ -f "$d/status" ] || { echo 137 > "$d/status.part"; mv -f "$d/status.part" "$d/status"; }
exit 0
"""

_JOB_OUTPUT = 'cat "$1/stdout" && cat "$1/stderr" >&2'

_JOB_PID = 'cat "$1/pid"'


def _sh(script: str, *args: str) -> list[str]:
    return ["sh", "-c", script, "sh", *args]


def _short(argv: list[str]) -> str:
    text = shlex.join(argv)
    return text if len(text) <= 120 else text[:117] + "..."


class _Stdout:
    """Collects stdout, taking the wrapper's `kbisect-pid N` line (the process group) off it.

    Lines before it (a chatty shell startup file) are kept as output; if no such line shows up
    in the first 64 KiB, the command never started and all of it is output.
    """

    def __init__(self, sink: Callable[[bytes], None] | None, pid_line: bool) -> None:
        self.sink = sink
        self.pid: int | None = None
        self.chunks: list[bytes] = []
        self._head: bytes | None = b"" if pid_line else None

    def feed(self, data: bytes) -> None:
        if self._head is not None:
            head = self._head + data
            data = b""
            while True:
                line, sep, rest = head.partition(b"\n")
                if not sep:
                    if len(head) > _PID_SCAN:
                        data, head = data + head, b""
                        self._head = None
                    break
                marker = _PID_MARKER.fullmatch(line)
                if marker is not None:
                    self.pid = int(marker.group(1))
                    data, head = data + rest, b""
                    self._head = None
                    break
                data += line + sep
                head = rest
            if self._head is not None:
                self._head = head
        if not data:
            return
        if self.sink is not None:
            self.sink(data)
        else:
            self.chunks.append(data)

    def value(self) -> bytes:
        tail, self._head = self._head or b"", None
        if tail and self.sink is not None:
            self.sink(tail)
            tail = b""
        return b"".join(self.chunks) + tail


class SshSession(Closeable):
    """One SSH connection to a host; a context manager that closes it."""

    def __init__(
        self, target: SshTarget, client: paramiko.SSHClient, transport: paramiko.Transport
    ) -> None:
        self.target = target
        self.name = target.name
        self._client = client
        self.transport = transport
        self.jobs_dir = JOBS_DIR

    def close(self) -> None:
        self._client.close()

    @property
    def active(self) -> bool:
        return self.transport.is_active()

    # -- commands --------------------------------------------------------------------------

    def run(self, argv: list[str], deadline: Deadline, stdin: bytes | None = None) -> CommandResult:
        """Run argv (each word quoted) and collect its exit status, stdout and stderr.

        A non-zero exit status is a result, not an error. When the deadline passes, the command
        and everything it started is killed and InfraError is raised.
        """
        if not argv:
            raise ValueError("run needs a command")
        source = _BytesSource(stdin) if stdin is not None else None
        return self._run(argv, deadline, source)

    def run_shell(
        self, script: str, deadline: Deadline, stdin: bytes | None = None
    ) -> CommandResult:
        """Run a trusted, fixed sh script (pass data as arguments of `run`, never in here)."""
        return self.run(["sh", "-c", script], deadline, stdin)

    def _run(
        self,
        argv: list[str],
        deadline: Deadline,
        stdin: _Source | None,
        stdout_sink: Callable[[bytes], None] | None = None,
    ) -> CommandResult:
        command = _RUN_WRAPPER.format(argv=shlex.join(argv))
        return self._exec(command, deadline, _short(argv), stdin, stdout_sink, pid_line=True)

    def _open(self, command: str, deadline: Deadline, what: str) -> paramiko.Channel:
        if deadline.expired:
            raise InfraError(f"{self.name}: no time left to run `{what}`")
        channel = self._open_channel(deadline)
        watchdog = _Watchdog(deadline, channel.close)
        try:
            channel.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            channel.close()
            if watchdog.fired:
                raise InfraError(
                    f"{self.name}: `{what}` did not start within {deadline.seconds:g} s"
                ) from None
            raise InfraError(f"{self.name}: cannot run `{what}`: {_describe(exc)}") from None
        finally:
            watchdog.cancel()
        return channel

    def _open_channel(self, deadline: Deadline) -> paramiko.Channel:
        # dropbear has been seen refusing a channel opened right after the previous one closed
        # (ChannelException, "administratively prohibited"): try again briefly before giving up.
        for attempt in range(_CHANNEL_TRIES):
            try:
                return self.transport.open_session(timeout=max(deadline.remaining(), 0.1))
            except paramiko.ChannelException as exc:
                if attempt + 1 == _CHANNEL_TRIES or deadline.remaining() < 1 or not self.active:
                    raise InfraError(
                        f"{self.name}: the host refused an SSH channel: {_describe(exc)}"
                    ) from None
                time.sleep(0.2 * (attempt + 1))
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise InfraError(
                    f"{self.name}: cannot open an SSH channel: {_describe(exc)}"
                ) from None
        raise AssertionError("unreachable")

    def _exec(
        self,
        command: str,
        deadline: Deadline,
        what: str,
        stdin: _Source | None,
        stdout_sink: Callable[[bytes], None] | None,
        *,
        pid_line: bool,
    ) -> CommandResult:
        channel = self._open(command, deadline, what)
        out = _Stdout(stdout_sink, pid_line)
        err: list[bytes] = []
        pending = b""
        sending = stdin is not None
        try:
            if not sending:
                channel.shutdown_write()
            # Only sending blocks (briefly, for the peer's window); receiving is done only when
            # data is there. paramiko's transport thread keeps buffering what arrives meanwhile.
            channel.settimeout(_SEND_WAIT)
            while True:
                busy = False
                # Both streams are drained on every turn: a command that fills stderr while we
                # wait for stdout (or the reverse) must never stall on a full window.
                if channel.recv_ready():
                    out.feed(channel.recv(_CHUNK))
                    busy = True
                if channel.recv_stderr_ready():
                    err.append(channel.recv_stderr(_CHUNK))
                    busy = True
                if sending and stdin is not None:
                    if not pending:
                        pending = stdin.read(_CHUNK)
                    if pending:
                        try:
                            sent = channel.send(pending)
                        except TimeoutError:  # the peer's window is full for now
                            sent = 0
                        except OSError:  # the command closed its stdin and went away
                            sent, pending, sending = 0, b"", False
                        pending = pending[sent:]
                        stdin.sent(sent)
                        busy = busy or sent > 0
                    else:
                        channel.shutdown_write()
                        sending = False
                if (
                    channel.exit_status_ready()
                    and (channel.eof_received or channel.closed)
                    and not channel.recv_ready()
                    and not channel.recv_stderr_ready()
                ):
                    break
                if deadline.expired:
                    self._stop_after_deadline(channel, out.pid, deadline, what)
                if busy or sending:
                    continue
                select.select([channel], [], [], min(deadline.remaining(), 0.5))
        except (paramiko.SSHException, EOFError, OSError) as exc:
            channel.close()
            raise InfraError(f"{self.name}: `{what}` failed: {_describe(exc)}") from None
        status = channel.exit_status
        channel.close()
        if status == -1 and not self.transport.is_active():
            raise InfraError(f"{self.name}: the SSH connection was lost during `{what}`")
        return CommandResult(status, out.value(), b"".join(err))

    def _stop_after_deadline(
        self, channel: paramiko.Channel, pid: int | None, deadline: Deadline, what: str
    ) -> None:
        channel.close()
        message = f"{self.name}: `{what}` was still running after {deadline.seconds:g} s"
        if pid is None:
            raise InfraError(f"{message}; it never started, nothing to stop")
        try:
            self._exec(
                shlex.join(_sh(_KILL_GROUP, str(pid))),
                Deadline(_KILL_SECONDS),
                f"stop process group {pid}",
                None,
                None,
                pid_line=False,
            )
        except InfraError as exc:
            raise InfraError(f"{message}; stopping it failed too: {exc}") from None
        raise InfraError(f"{message}; stopped it (process group {pid})")

    def _check(self, result: CommandResult, what: str) -> CommandResult:
        if not result.ok:
            detail = result.stderr.decode(errors="replace").strip().splitlines()
            reason = detail[-1] if detail else f"exit status {result.status}"
            raise InfraError(f"{self.name}: {what} failed: {reason}")
        return result

    # -- files -----------------------------------------------------------------------------

    def upload(
        self, local: Path, remote: str, deadline: Deadline, *, mode: int | None = None
    ) -> None:
        """Copy a local file to `remote` over an exec channel (`cat`), check its sha256 on the
        host, and only then rename it into place; `mode` (e.g. 0o755) is set before the rename."""
        try:
            size = local.stat().st_size
            digest = _sha256_file(local)
        except OSError as exc:
            raise InfraError(f"cannot read {local}: {exc.strerror}") from None
        with local.open("rb") as f, byte_progress(f"{self.name}: {local.name}", size) as bar:
            source = _FileSource(f, lambda n: advance(bar, n))
            self._send(source, digest, remote, deadline, mode, f"upload of {local} to {remote}")

    def upload_bytes(
        self, data: bytes, remote: str, deadline: Deadline, *, mode: int | None = None
    ) -> None:
        """Like `upload`, for content made here (a generated script, a config file)."""
        digest = hashlib.sha256(data).hexdigest()
        self._send(_BytesSource(data), digest, remote, deadline, mode, f"upload to {remote}")

    def _send(
        self,
        source: _Source,
        digest: str,
        remote: str,
        deadline: Deadline,
        mode: int | None,
        what: str,
    ) -> None:
        tmp = f"{remote}.kbisect-{secrets.token_hex(4)}.part"
        argv = _sh(_UPLOAD, tmp, digest, remote, "" if mode is None else f"{mode:o}")
        try:
            result = self._run(argv, deadline, source)
        except InfraError:
            self._remove_quietly(tmp)
            raise
        stdout = result.stdout.decode(errors="replace").split()
        remote_sum = stdout[-1] if stdout else "?"
        if result.status == 9 or (result.ok and remote_sum != digest):
            raise InfraError(
                f"{self.name}: {what} is corrupt: sha256 {remote_sum} on the host, "
                f"{digest} here; nothing was installed"
            )
        self._check(result, what)

    def download(self, remote: str, local: Path, deadline: Deadline) -> None:
        """Copy `remote` to `local` (`cat` over an exec channel), checking its sha256; the local
        file appears complete or not at all."""
        local.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{local.name}.", suffix=".part", dir=local.parent)
        tmp = Path(tmp_name)
        digest = hashlib.sha256()
        what = f"download of {remote}"
        try:
            with os.fdopen(fd, "wb") as f, byte_progress(f"{self.name}: {remote}", None) as bar:

                def sink(data: bytes) -> None:
                    f.write(data)
                    digest.update(data)
                    advance(bar, len(data))

                result = self._run(_sh(_DOWNLOAD, remote), deadline, None, sink)
            self._check(result, what)
            lines = result.stderr.decode(errors="replace").split()
            remote_sum = lines[0] if lines else "?"
            if remote_sum != digest.hexdigest():
                raise InfraError(
                    f"{self.name}: {what} is corrupt: sha256 {remote_sum} on the host, "
                    f"{digest.hexdigest()} received"
                )
            tmp.replace(local)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _remove_quietly(self, remote: str) -> None:
        with contextlib.suppress(InfraError):
            self.run(["rm", "-f", remote], Deadline(_KILL_SECONDS))

    # -- detached jobs ---------------------------------------------------------------------

    def _job_dir(self, name: str) -> str:
        if not _NAME_RE.fullmatch(name):
            raise UserError(f"bad job name {name!r}: use letters, digits, '.', '_' and '-'")
        return f"{self.jobs_dir}/{name}"

    def start_job(self, argv: list[str], name: str, deadline: Deadline | None = None) -> JobHandle:
        """Start argv detached (its own session, output to files in the job directory) so that it
        outlives this connection; its exit status lands in the job directory when it ends."""
        if not argv:
            raise ValueError("start_job needs a command")
        directory = self._job_dir(name)
        result = self.run(_sh(_JOB_START, directory, *argv), deadline or _small())
        if result.status == 4:
            raise InfraError(f"{self.name}: job {name} is still running; stop it first")
        self._check(result, f"starting job {name}")
        return JobHandle(name, directory, _parse_pid(result, self.name, name))

    def find_job(self, name: str, deadline: Deadline | None = None) -> JobHandle:
        """The handle of a job started earlier (by any session), from its job directory."""
        directory = self._job_dir(name)
        result = self.run(_sh(_JOB_PID, directory), deadline or _small())
        if not result.ok:
            raise InfraError(f"{self.name}: there is no job {name} ({directory})")
        return JobHandle(name, directory, _parse_pid(result, self.name, name))

    def poll(
        self, job: JobHandle, deadline: Deadline | None = None, linger: float = 0.0
    ) -> JobState:
        """Whether the job still runs, or how it ended. With `linger`, the host waits up to that
        many seconds for the job to end before answering "running"."""
        tenths = str(max(0, round(linger * 10)))
        result = self._check(
            self.run(_sh(_JOB_POLL, job.directory, tenths), deadline or _small()),
            f"polling job {job.name}",
        )
        words = result.text().split()
        match words:
            case ["running"]:
                return JobState(True, None)
            case ["done", status] if status.lstrip("-").isdigit():
                return JobState(False, int(status))
            case ["lost"]:
                return JobState(False, None)
            case ["missing"]:
                raise InfraError(f"{self.name}: there is no job {job.name} ({job.directory})")
        raise InfraError(f"{self.name}: polling job {job.name} answered {result.text()!r}")

    def wait_job(self, job: JobHandle, deadline: Deadline, interval: float = 1.0) -> JobState:
        """Wait until the job ends or the deadline passes (then its state says running): one
        round trip every `interval` seconds, each noticing an end within 0.2 s."""
        while True:
            linger = max(0.0, min(interval, deadline.remaining()))
            answer = Deadline(max(min(deadline.remaining(), _SMALL_OP_SECONDS), 5) + linger)
            state = self.poll(job, answer, linger)
            if not state.running or deadline.expired:
                return state

    def job_output(self, job: JobHandle, deadline: Deadline | None = None) -> JobOutput:
        """Everything the job wrote so far to stdout and stderr."""
        result = self._check(
            self.run(_sh(_JOB_OUTPUT, job.directory), deadline or _small()),
            f"reading the output of job {job.name}",
        )
        return JobOutput(result.stdout, result.stderr)

    def stop_job(self, job: JobHandle, deadline: Deadline | None = None) -> JobState:
        """Kill the job's process group (TERM, then KILL after 5 s); returns its final state."""
        self._check(
            self.run(_sh(_JOB_STOP, job.directory), deadline or _small()),
            f"stopping job {job.name}",
        )
        return self.poll(job, deadline)

    def remove_job(self, job: JobHandle, deadline: Deadline | None = None) -> None:
        """Delete a finished job's directory."""
        self._check(self.run(["rm", "-rf", job.directory], deadline or _small()), "removing job")


def _small() -> Deadline:
    return Deadline(_SMALL_OP_SECONDS)


def _parse_pid(result: CommandResult, host: str, name: str) -> int:
    text = result.text().strip()
    if not text.isdigit():
        raise InfraError(f"{host}: job {name} has no process id (got {text!r})")
    return int(text)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Source:
    """What a command reads on stdin, with a count of what was sent."""

    def read(self, size: int) -> bytes:
        raise NotImplementedError

    def sent(self, count: int) -> None:
        """Called with each number of bytes the channel took."""


class _BytesSource(_Source):
    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._offset = 0

    def read(self, size: int) -> bytes:
        chunk = bytes(self._data[self._offset : self._offset + size])
        self._offset += len(chunk)
        return chunk


class _FileSource(_Source):
    def __init__(self, f: IO[bytes], on_sent: Callable[[int], None]) -> None:
        self._f = f
        self._on_sent = on_sent

    def read(self, size: int) -> bytes:
        return self._f.read(size)

    def sent(self, count: int) -> None:
        self._on_sent(count)
