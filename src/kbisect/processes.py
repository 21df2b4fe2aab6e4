"""Ending what kbisect starts: by PID or by process group, TERM first, KILL after a grace time.

Every child that can start children of its own (make, a compiler, a user's test script) is
started in a new session, so its process group id is its PID and the whole group can be ended.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kbisect.deadline import Deadline


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
    reap `proc`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue


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
    """End every tracked process group; how many there were."""
    with _lock:
        procs = list(_running)
    for proc in procs:
        end_group(proc, grace)
    return len(procs)
