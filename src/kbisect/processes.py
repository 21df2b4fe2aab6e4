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
from collections.abc import Iterator
from typing import Any


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
