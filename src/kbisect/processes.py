"""Ending what kbisect starts: by PID or by process group, TERM first, KILL after a grace time.

Every child that can start children of its own (make, a compiler, a user's test script) is
started in a new session, so its process group id is its PID and the whole group can be ended.
"""

from __future__ import annotations

import os
import signal
import subprocess
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
