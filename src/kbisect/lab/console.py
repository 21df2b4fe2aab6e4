"""A rack machine's serial console, captured by a command kbisect runs on this machine: one
whose output is the console (`ipmitool ... sol activate`, a conserver client, `tail -F` of a
log). Its stdout and stderr go straight into the host's console log, so nothing is lost while
kbisect waits for a boot.

The command runs in its own session and is ended by its PID (its process group) when the
command that started it ends (the Lab closes) or the host shuts down. Its PID is recorded with
the PID of the kbisect process that started it, so that a capture left behind by a kbisect that
was killed is ended by the next one, and a capture of a kbisect still running is never touched.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from kbisect import processes
from kbisect.processes import STDOUT, Child, command_line, end_pid, pid_alive

_END_GRACE = 5.0  # a console client ends at once on TERM; KILL after this


class ConsoleCapture:
    """The console command of one host, writing into `log`; its PIDs are kept in `state`."""

    def __init__(
        self,
        host: str,
        argv: list[str],
        log: Path,
        state: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.host = host
        self.argv = argv
        self.env = env
        self.log = log
        self.state = state
        self._child: Child | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        """The running capture's PID (None when none runs)."""
        child = self._child
        return child.pid if child is not None and child.poll() is None else None

    def start(self, *, fresh: bool = False) -> bool:
        """Make sure the command runs; `fresh` empties the log first. True if it was (re)started.

        Raises CommandError (an InfraError) when the command cannot be started."""
        with self._lock:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            if fresh:
                # Truncated, not replaced: the command appends (O_APPEND) to the same file.
                with self.log.open("ab") as log:
                    log.truncate(0)
            if self._child is not None and self._child.poll() is None:
                return False
            self._end_left_behind()
            with self.log.open("ab") as log:
                self._child = processes.start(
                    self.argv,
                    stdout=log,
                    stderr=STDOUT,
                    env=self.env,
                    what=f"console of {self.host}",
                )
            self._write_state(self._child.pid)
            return True

    def stop(self) -> bool:
        """End the command by its PID (TERM, then KILL); True if it was running."""
        with self._lock:
            child, self._child = self._child, None
            if child is None:
                return False
            running = child.poll() is None
            child.end(_END_GRACE)
            self.state.unlink(missing_ok=True)
            return running

    def _write_state(self, pid: int) -> None:
        tmp = self.state.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": pid, "owner": os.getpid(), "argv": self.argv}))
        tmp.rename(self.state)

    def _end_left_behind(self) -> None:
        """End a capture whose kbisect is gone (killed before it could end it)."""
        try:
            recorded = json.loads(self.state.read_text())
            pid, owner, argv = int(recorded["pid"]), int(recorded["owner"]), recorded["argv"]
        except (OSError, ValueError, TypeError, KeyError):
            return
        if pid_alive(owner):
            return  # the capture of a kbisect that still runs (another Lab, another command)
        if command_line(pid) == argv:  # not a recycled PID
            end_pid(pid, _END_GRACE)
        self.state.unlink(missing_ok=True)
