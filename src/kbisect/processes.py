"""The one door through which kbisect runs an external program, and the way it ends one.

`run` starts a program and waits for it; `start` starts one that lives on while kbisect works
with it (QEMU, a pipe kbisect reads or writes). Every child gets a new session, so its process
group id is its PID and the whole group (make's compilers, a user's script's children) can be
ended by it, TERM first and KILL after a grace time. Every wait has a deadline. A program that is
missing, exits non-zero or outlives its deadline becomes a CommandError, an InfraError whose one
line names the command and the last lines it wrote to stderr.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shlex
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from kbisect.deadline import Deadline
from kbisect.errors import InfraError

# What `start` can connect a child's stdin, stdout or stderr to besides an open file.
PIPE = subprocess.PIPE  # a pipe to or from kbisect (stderr: read into the error's tail)
STDOUT = subprocess.STDOUT  # stderr only: into the same place as stdout
DEVNULL = subprocess.DEVNULL

Stream = int | IO[Any] | None
TAIL_LINES = 3  # lines of stderr an error shows
_SHOWN_COMMAND = 120  # characters of a command line an error shows


def command_line(pid: int) -> list[str] | None:
    """A process's argv, from /proc (None when it is gone). A process in the middle of execve
    shows an empty command line for a moment: it is read again rather than taken for gone."""
    for _ in range(50):
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        if raw:
            return [word.decode(errors="replace") for word in raw.split(b"\0")[:-1]]
        time.sleep(0.01)
    return None


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists (zombies included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def end_group(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """TERM, then KILL, the process group led by `proc` (started with start_new_session), and
    reap `proc`. The group counts, not only `proc`: a child that ignores TERM while its parent
    (a shell) exits is KILLed after the grace time too."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        if _group_ends(proc, grace):
            break
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)


def _group_ends(proc: subprocess.Popen[Any], grace: float) -> bool:
    """Whether the group led by `proc` is gone within `grace` seconds (`proc` is reaped)."""
    end = time.monotonic() + grace
    while True:
        proc.poll()
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return True
        if proc.returncode is not None and _group_only_zombies(proc.pid):
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.05)


def _group_only_zombies(pgid: int) -> bool:
    """Whether every process left in the group has exited (zombies waiting for init)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return False
    return True


_SUPERVISOR = """import os, signal, subprocess, sys, time
parent, grace = int(sys.argv[1]), float(sys.argv[2])
def end(*_):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.killpg(0, signal.SIGTERM)
    until = time.monotonic() + grace
    while time.monotonic() < until and child.poll() is None:
        time.sleep(0.05)
    os.killpg(0, signal.SIGKILL)
import ctypes
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
child = subprocess.Popen(sys.argv[3:])
signal.signal(signal.SIGTERM, end)
if os.getppid() != parent:
    end()
status = child.wait()
sys.exit(status if status >= 0 else 128 - status)
"""
"""Runs a command in its own process group and ends the whole group, TERM then KILL after the
grace time, when kbisect dies (even by SIGKILL: the kernel sends it PR_SET_PDEATHSIG's TERM)."""


def supervised(argv: Sequence[str], grace: float = 5.0) -> list[str]:
    """`argv` under the supervisor: its process group ends when kbisect (this thread) dies.
    Start the result with `run` or `start` (a new session, so the group is the command's)."""
    import sys

    return [sys.executable, "-c", _SUPERVISOR, str(os.getpid()), str(grace), *argv]


def end_pid(pid: int, grace: float = 10.0) -> None:
    """TERM, then KILL, one process by PID (ours or one a previous kbisect started), waiting
    (bounded) until it is gone or a zombie; reaps it when it is our child."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = Deadline(grace)
        while not deadline.expired:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)  # reap if it is our child
            except ChildProcessError:
                done = 0
                if not Path(f"/proc/{pid}").exists():
                    return
            if done == pid:
                return
            state = _proc_state(pid)
            if state in (None, "Z"):
                return
            time.sleep(0.1)


def _proc_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


# Process groups running right now (builds, user commands), so that a command interrupted in
# its main thread can end those that worker threads started.
_running: set[subprocess.Popen[Any]] = set()
_lock = threading.Lock()


@contextlib.contextmanager
def tracked(proc: subprocess.Popen[Any]) -> Iterator[subprocess.Popen[Any]]:
    with _lock:
        _running.add(proc)
    try:
        yield proc
    finally:
        with _lock:
            _running.discard(proc)


def end_all(grace: float = 5.0) -> int:
    """End every tracked process group (and stop tracking it); how many there were."""
    with _lock:
        procs = list(_running)
    for proc in procs:
        end_group(proc, grace)
        with _lock:
            _running.discard(proc)
    return len(procs)


# ---------------------------------------------------------------------------------------------
# Errors


def describe(argv: Sequence[str]) -> str:
    """A command line as an error shows it: quoted, and cut when very long (QEMU's)."""
    line = shlex.join(argv)
    return line if len(line) <= _SHOWN_COMMAND else line[: _SHOWN_COMMAND - 3] + "..."


def last_lines(text: str, count: int = TAIL_LINES) -> tuple[str, ...]:
    """The last non-empty lines of a program's output, each cut to a readable length."""
    lines = [line.strip()[:200] for line in text.splitlines() if line.strip()]
    return tuple(lines[-count:])


class CommandError(InfraError):
    """An external program did not do its job.

    `argv` is the command, `status` its exit status (negative: killed by that signal; None when
    it never ran or was stopped at its deadline) and `tail` its last lines of stderr (of its
    output, when stderr went there too). `what` says what kbisect was doing, when that helps."""

    def __init__(
        self,
        argv: Sequence[str],
        problem: str,
        *,
        status: int | None = None,
        tail: Sequence[str] = (),
        what: str = "",
    ) -> None:
        self.argv, self.status, self.tail = tuple(argv), status, tuple(tail)
        text = problem + (": " + " | ".join(self.tail) if self.tail else "")
        super().__init__(f"{what}: {text}" if what else text)


class ProgramMissing(CommandError):
    """The program is not on PATH (or not at the path given)."""

    def __init__(self, argv: Sequence[str], *, hint: str = "", what: str = "") -> None:
        super().__init__(
            argv, f"{argv[0]} is not installed" + (f" ({hint})" if hint else ""), what=what
        )


class CommandExited(CommandError):
    """The program exited with a status other than 0, or was killed by a signal."""

    def __init__(
        self, argv: Sequence[str], status: int, tail: Sequence[str] = (), *, what: str = ""
    ) -> None:
        how = f"was killed by signal {-status}" if status < 0 else f"exited {status}"
        super().__init__(argv, f"`{describe(argv)}` {how}", status=status, tail=tail, what=what)


class DeadlinePassed(CommandError):
    """The program ran past its deadline; its process group has been ended."""

    def __init__(
        self, argv: Sequence[str], seconds: float, tail: Sequence[str] = (), *, what: str = ""
    ) -> None:
        self.seconds = seconds
        super().__init__(
            argv,
            f"`{describe(argv)}` did not finish within {seconds:g} s; stopped",
            tail=tail,
            what=what,
        )


# ---------------------------------------------------------------------------------------------
# run: start, wait, collect


class Output(Enum):
    """Where `run` sends a program's stdout and stderr."""

    SEPARATE = "separate"  # both captured, apart
    MERGED = "merged"  # stderr into stdout, in the order a terminal shows them
    INHERIT = "inherit"  # kbisect's own stdout and stderr (a user's command, seen as it runs)


@dataclass(frozen=True)
class Result:
    """How a program ended and what it wrote (stdout holds stderr too with Output.MERGED)."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run(
    argv: Sequence[str],
    *,
    deadline: Deadline | float,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    input: str | bytes | None = None,
    stdin: IO[Any] | None = None,
    output: Output = Output.SEPARATE,
    on_line: Callable[[str], None] | None = None,
    check: bool = True,
    hint: str = "",
    what: str = "",
    grace: float = 10.0,
) -> Result:
    """Run a program to its end, within `deadline` (seconds from now, or a Deadline).

    stdin is /dev/null unless `input` (fed to it) or `stdin` (an open file) is given. `on_line`
    is called with each line of stdout (without its newline) as it comes. Raises ProgramMissing
    (`hint` says how to install it), DeadlinePassed after ending the whole process group, and
    CommandExited for a status other than 0 unless `check` is False. Anything else that stops
    the wait (Ctrl-C) also ends the group. `what` prefixes the error: what kbisect was doing.
    """
    limit = deadline if isinstance(deadline, Deadline) else Deadline(deadline)
    if input is not None and stdin is not None:
        raise ValueError("run() takes input or stdin, not both")
    inherit = output is Output.INHERIT
    proc = _spawn(
        argv,
        cwd=cwd,
        env=env,
        stdin=PIPE if input is not None else (stdin if stdin is not None else DEVNULL),
        stdout=None if inherit else PIPE,
        stderr=None if inherit else (STDOUT if output is Output.MERGED else PIPE),
        hint=hint,
        what=what,
    )
    out, err = bytearray(), bytearray()
    try:
        with tracked(proc):
            if input is not None:
                _feed(proc, input.encode() if isinstance(input, str) else input)
            _collect(proc, limit, out, err, on_line)
            # piped output that has ended means it is exiting: a moment more even at the deadline
            status = proc.wait(timeout=max(limit.remaining(), 1.0))
    except subprocess.TimeoutExpired as exc:
        end_group(proc, grace)
        tail = last_lines(_text(err if output is Output.SEPARATE else out))
        raise DeadlinePassed(argv, limit.seconds, tail, what=what) from exc
    except BaseException:
        end_group(proc, grace)
        raise
    finally:
        _close_pipes(proc)
    result = Result(tuple(argv), status, _text(out), _text(err))
    if check and status != 0:
        tail = last_lines(result.stderr if output is Output.SEPARATE else result.stdout)
        raise CommandExited(argv, status, tail, what=what)
    return result


def _spawn(
    argv: Sequence[str],
    *,
    cwd: Path | str | None,
    env: Mapping[str, str] | None,
    stdin: Stream,
    stdout: Stream,
    stderr: Stream,
    hint: str,
    what: str,
) -> subprocess.Popen[bytes]:
    """Popen in a new session, its failure to start turned into a CommandError."""
    try:
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # its own process group: ended whole, by its PID
        )
    except FileNotFoundError as exc:
        if cwd is not None and exc.filename is not None and str(exc.filename) == str(cwd):
            problem = f"cannot run {argv[0]} in {cwd}: no such directory"
            raise CommandError(argv, problem, what=what) from exc
        raise ProgramMissing(argv, hint=hint, what=what) from exc
    except OSError as exc:
        problem = f"cannot run {argv[0]}: {exc.strerror or exc}"
        raise CommandError(argv, problem, what=what) from exc


def _feed(proc: subprocess.Popen[bytes], data: bytes) -> None:
    """Write input from a thread, so that a child writing much output before reading all of
    its input cannot deadlock against us."""
    pipe = proc.stdin
    assert pipe is not None

    def write() -> None:
        with contextlib.suppress(OSError, ValueError):  # it stopped reading: its status tells
            try:
                pipe.write(data)
            finally:
                pipe.close()

    threading.Thread(target=write, name=f"input to {proc.pid}", daemon=True).start()


def _collect(
    proc: subprocess.Popen[bytes],
    limit: Deadline,
    out: bytearray,
    err: bytearray,
    on_line: Callable[[str], None] | None,
) -> None:
    """Read stdout and stderr (those piped) until both end; raises TimeoutExpired at the
    deadline. Reads what is there (os.read), so a line the child has not finished never
    blocks the deadline."""
    buffers = {proc.stdout: out, proc.stderr: err}
    partial = b""
    with selectors.DefaultSelector() as sel:
        for pipe, buffer in buffers.items():
            if pipe is not None:
                sel.register(pipe, selectors.EVENT_READ, buffer)
        while sel.get_map():
            if limit.expired:
                raise subprocess.TimeoutExpired(proc.args, limit.seconds)
            for key, _ in sel.select(timeout=min(1.0, limit.remaining())):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                key.data.extend(chunk)
                if on_line is not None and key.fileobj is proc.stdout:
                    *lines, partial = (partial + chunk).split(b"\n")
                    for line in lines:
                        on_line(line.decode(errors="replace"))
    if on_line is not None and partial:
        on_line(partial.decode(errors="replace"))


def _text(data: bytes | bytearray) -> str:
    return bytes(data).decode(errors="replace")


def _close_pipes(proc: subprocess.Popen[Any]) -> None:
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


# ---------------------------------------------------------------------------------------------
# start: a child that lives on


class Child:
    """A program kbisect started and works with while it runs (see `start`).

    Use as a context manager: leaving the block ends the child's process group if it still
    runs. `stdin` and `stdout` are its pipes when asked for; a piped stderr is read in the
    background into the last lines an error shows, so the child never blocks on it."""

    def __init__(
        self, proc: subprocess.Popen[bytes], argv: Sequence[str], *, track: bool, what: str
    ) -> None:
        self.proc, self.argv, self.what = proc, tuple(argv), what
        self.stdin, self.stdout = proc.stdin, proc.stdout
        self._tracked = track
        if track:
            with _lock:
                _running.add(proc)
        self._stderr: deque[str] = deque(maxlen=50)
        self._reader: threading.Thread | None = None
        if proc.stderr is not None:
            self._reader = threading.Thread(
                target=self._read_stderr, name=f"stderr of {proc.pid}", daemon=True
            )
            self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        """Its exit status, or None while it runs."""
        status = self.proc.poll()
        if status is not None:
            self._untrack()
        return status

    def wait(self, deadline: Deadline | float) -> int:
        """Its exit status; at the deadline its group is ended and DeadlinePassed raised."""
        limit = deadline if isinstance(deadline, Deadline) else Deadline(deadline)
        try:
            status = self.proc.wait(timeout=max(limit.remaining(), 0.01))
        except subprocess.TimeoutExpired as exc:
            self.end()
            raise DeadlinePassed(
                self.argv, limit.seconds, self.stderr_tail(), what=self.what
            ) from exc
        self._untrack()
        return status

    def check(self, deadline: Deadline | float) -> None:
        """Wait; CommandExited (with the tail of stderr) unless it exited 0."""
        status = self.wait(deadline)
        if status != 0:
            raise CommandExited(self.argv, status, self.stderr_tail(), what=self.what)

    def failure(self, within: float) -> CommandExited | None:
        """How it failed, when it exits non-zero within `within` seconds (None if it exits 0
        or still runs): for when kbisect's side of a pipe broke first and the child knows why."""
        try:
            status = self.proc.wait(timeout=within)
        except subprocess.TimeoutExpired:
            return None
        self._untrack()
        return (
            CommandExited(self.argv, status, self.stderr_tail(), what=self.what) if status else None
        )

    def end(self, grace: float = 10.0) -> None:
        """End its process group by its PID (TERM, then KILL) and reap it."""
        end_group(self.proc, grace)
        self._untrack()

    def stderr_tail(self, count: int = TAIL_LINES) -> tuple[str, ...]:
        """The last lines it wrote to a piped stderr (all of them once it has exited)."""
        if self._reader is not None and self.proc.poll() is not None:
            self._reader.join(timeout=2)
        return last_lines("\n".join(self._stderr), count)

    def __enter__(self) -> Child:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc.poll() is None:
            self.end()
        self._untrack()
        _close_pipes(self.proc)

    def _read_stderr(self) -> None:
        pipe = self.proc.stderr
        assert pipe is not None
        with contextlib.suppress(OSError, ValueError):
            for line in pipe:
                self._stderr.append(line.decode(errors="replace"))

    def _untrack(self) -> None:
        if self._tracked:
            with _lock:
                _running.discard(self.proc)
            self._tracked = False


def start(
    argv: Sequence[str],
    *,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    stdin: Stream = DEVNULL,
    stdout: Stream = DEVNULL,
    stderr: Stream = PIPE,
    track: bool = True,
    hint: str = "",
    what: str = "",
) -> Child:
    """Start a program in a new session and return at once.

    stdin and stdout are PIPE, DEVNULL or an open file; stderr also STDOUT, and when PIPE
    (the default) it is kept for the error's tail. A tracked child is ended by `end_all`
    (Ctrl-C); an untracked one (QEMU, which outlives a command on purpose) only by its PID.
    Raises ProgramMissing or CommandError when it cannot start."""
    proc = _spawn(
        argv, cwd=cwd, env=env, stdin=stdin, stdout=stdout, stderr=stderr, hint=hint, what=what
    )
    return Child(proc, argv, track=track, what=what)
