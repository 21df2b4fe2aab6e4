"""One exception family for the whole tool, and the one table of exit statuses.

User errors (bad config, unknown revision) exit 2 with one clear line; infrastructure errors
(host unreachable, disk full, a tool missing) exit 3. Test failures are results, not exceptions.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ExitCode(IntEnum):
    """Every exit status kbisect uses, with its meaning; docs/tasks.md shows the same table
    (generated from this; a test compares them). Tasks exit with these, never with literal
    numbers."""

    meaning: str

    def __new__(cls, value: int, meaning: str) -> ExitCode:
        member = int.__new__(cls, value)
        member._value_ = value
        member.meaning = meaning
        return member

    OK = 0, "success: all passed or skipped; a culprit found and confirmed"
    FAILED = 1, "the kernel failed (FAIL); new regressions; a culprit found but not confirmed"
    USAGE = 2, "usage or configuration error: a bad flag or value, an unknown name or revision"
    INFRA = 3, "infrastructure error: a host, tool, disk or deadline; a bisection aborted"
    ENDS_DID_NOT_REPRODUCE = 4, "bisect: the good end did not pass or the bad end did not fail"
    SKIP = 125, "the variant does not apply to the revision (`git bisect run`'s skip)"
    HUNG_UP = 129, "ended by SIGHUP (the lab's hosts are stopped first)"
    INTERRUPTED = 130, "interrupted (Ctrl-C)"
    OUTPUT_CLOSED = 141, "the reader of the output went away (a `head` reading it ended)"
    TERMINATED = 143, "ended by SIGTERM (the lab's hosts are stopped first)"


class KbisectError(Exception):
    """Base of every error kbisect raises on purpose (the specific ones below say whose fault
    it is; one that does not is treated as infrastructure trouble, never as a kernel failure)."""

    exit_code = ExitCode.INFRA

    def report(self) -> str:
        """What the user sees: one line, no traceback."""
        return f"kbisect: {self}"


class UserError(KbisectError):
    """The user asked for something wrong: fix the input and run again."""

    exit_code = ExitCode.USAGE


class InfraError(KbisectError):
    """The lab, the machine or a tool failed: not the user's fault, not the kernel's."""

    exit_code = ExitCode.INFRA


@dataclass(frozen=True)
class ConfigProblem:
    """One mistake in one configuration file."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(UserError):
    """One or more configuration problems, all reported together."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line or 0, p.key))
        super().__init__("\n".join(str(p) for p in self.problems))

    def report(self) -> str:
        count = len(self.problems)
        summary = f"kbisect: {count} configuration problem{'s' if count != 1 else ''}"
        return f"{self}\n{summary}"
