"""Remote commands with wall-clock deadlines, over one SSH connection.

How a command is run so that it can be stopped: the login shell starts it in the background under
`setsid`, so it leads a new process group whose id is its PID; the group leader prints that PID as
the first line of stdout and then execs the command. When the deadline passes, a second channel
kills the whole group (TERM, then KILL), and InfraError is raised.

User data never reaches a remote shell unquoted: argv is quoted with shlex, and the fixed scripts
of this package take their data as positional parameters (`sh_script`).
"""

from __future__ import annotations

import re
import select
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass

import paramiko

from kbisect.closeable import Closeable
from kbisect.deadline import Deadline
from kbisect.errors import InfraError
from kbisect.lab.ssh.net import SshTarget, Watchdog, describe

_CHUNK = 1 << 16
_SEND_WAIT = 0.05
_KILL_SECONDS = 15.0
_CHANNEL_TRIES = 4


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


def sh_script(script: str, *args: str) -> list[str]:
    """argv running a fixed sh script with `args` as its positional parameters."""
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


class Source:
    """What a command reads on stdin, with a count of what was sent."""

    def read(self, size: int) -> bytes:
        raise NotImplementedError

    def sent(self, count: int) -> None:
        """Called with each number of bytes the channel took."""


class BytesSource(Source):
    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._offset = 0

    def read(self, size: int) -> bytes:
        chunk = bytes(self._data[self._offset : self._offset + size])
        self._offset += len(chunk)
        return chunk


class SshCommands(Closeable):
    """One SSH connection to a host and the commands run over it; a context manager that closes
    it. File transfer and detached jobs build on this (kbisect.lab.ssh.session.SshSession)."""

    def __init__(
        self, target: SshTarget, client: paramiko.SSHClient, transport: paramiko.Transport
    ) -> None:
        self.target = target
        self.name = target.name
        self._client = client
        self.transport = transport

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
        source = BytesSource(stdin) if stdin is not None else None
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
        stdin: Source | None,
        stdout_sink: Callable[[bytes], None] | None = None,
    ) -> CommandResult:
        command = _RUN_WRAPPER.format(argv=shlex.join(argv))
        return self._exec(command, deadline, _short(argv), stdin, stdout_sink, pid_line=True)

    def _open(self, command: str, deadline: Deadline, what: str) -> paramiko.Channel:
        if deadline.expired:
            raise InfraError(f"{self.name}: no time left to run `{what}`")
        channel = self._open_channel(deadline)
        watchdog = Watchdog(deadline, channel.close)
        try:
            channel.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            channel.close()
            if watchdog.fired:
                raise InfraError(
                    f"{self.name}: `{what}` did not start within {deadline.seconds:g} s"
                ) from None
            raise InfraError(f"{self.name}: cannot run `{what}`: {describe(exc)}") from None
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
                        f"{self.name}: the host refused an SSH channel: {describe(exc)}"
                    ) from None
                time.sleep(0.2 * (attempt + 1))
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise InfraError(
                    f"{self.name}: cannot open an SSH channel: {describe(exc)}"
                ) from None
        raise AssertionError("unreachable")

    def _exec(
        self,
        command: str,
        deadline: Deadline,
        what: str,
        stdin: Source | None,
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
            raise InfraError(f"{self.name}: `{what}` failed: {describe(exc)}") from None
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
                shlex.join(sh_script(_KILL_GROUP, str(pid))),
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
