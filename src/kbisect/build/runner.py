"""Running build commands: output to a log file, a deadline, progress, and the whole process
group ended by PID on timeout or Ctrl-C (make's children included)."""

from __future__ import annotations

import selectors
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import IO

from kbisect.deadline import Deadline
from kbisect.errors import InfraError
from kbisect.processes import end_group, tracked


class CommandFailed(Exception):
    """A command exited non-zero on its own (not killed): the build failed."""

    def __init__(self, argv: list[str], status: int) -> None:
        super().__init__(f"{argv[0]} exited {status}")
        self.argv, self.status = argv, status


class Runner:
    """Runs commands one after another into one log, under one deadline."""

    def __init__(
        self,
        log: IO[str],
        deadline: Deadline,
        env: dict[str, str],
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self.log, self.deadline, self.env, self.on_line = log, deadline, env, on_line

    def run(self, argv: list[str], cwd: Path) -> str:
        """Run to completion; returns the output. Raises CommandFailed or InfraError."""
        self.log.write(f"$ {' '.join(argv)}\n")
        self.log.flush()
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
                start_new_session=True,  # its own process group, so we can end all of it
            )
        except FileNotFoundError:
            raise InfraError(f"{argv[0]} is not installed (./bootstrap installs it)") from None
        output: list[str] = []
        try:
            with tracked(proc):
                self._pump(proc, output)
                status = proc.wait(timeout=max(1.0, self.deadline.remaining()))
        except subprocess.TimeoutExpired:
            end_group(proc)
            raise InfraError(
                f"{argv[0]} {' '.join(argv[1:3])} did not finish within the build's "
                f"{self.deadline.seconds:g} s; stopped"
            ) from None
        except BaseException:
            end_group(proc)
            raise
        if status < 0:
            raise InfraError(f"{argv[0]} was killed by signal {-status}")
        if status != 0:
            raise CommandFailed(argv, status)
        return "".join(output)

    def _pump(self, proc: subprocess.Popen[str], output: list[str]) -> None:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while True:
                if self.deadline.expired:
                    raise subprocess.TimeoutExpired(proc.args, self.deadline.seconds)
                if not sel.select(timeout=min(1.0, self.deadline.remaining())):
                    continue
                line = proc.stdout.readline()
                if not line:
                    return
                output.append(line)
                self.log.write(line)
                if self.on_line is not None:
                    self.on_line(line)
