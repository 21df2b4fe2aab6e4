"""Running build commands: output to a log file, a deadline, progress, and the whole process
group ended by PID on timeout or Ctrl-C (make's children included)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import IO

from kbisect import processes
from kbisect.deadline import Deadline
from kbisect.errors import InfraError
from kbisect.processes import CommandExited, DeadlinePassed, Output


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
            done = processes.run(
                argv,
                deadline=self.deadline,
                cwd=cwd,
                env=self.env,
                output=Output.MERGED,
                on_line=self._line,
                check=False,
                hint="./bootstrap installs it",
            )
        except DeadlinePassed as exc:
            raise InfraError(
                f"{argv[0]} {' '.join(argv[1:3])} did not finish within the build's "
                f"{self.deadline.seconds:g} s; stopped"
            ) from exc
        if done.returncode < 0:
            raise CommandExited(argv, done.returncode)
        if done.returncode != 0:
            raise CommandFailed(argv, done.returncode)
        return done.stdout

    def _line(self, line: str) -> None:
        self.log.write(line + "\n")
        if self.on_line is not None:
            self.on_line(line)
