"""One exception family for the whole tool.

User errors (bad config, unknown revision) exit 2 with one clear line; infrastructure errors
(host unreachable, disk full, a tool missing) exit 3. Test failures are results, not exceptions.
"""

from __future__ import annotations

from dataclasses import dataclass


class KbisectError(Exception):
    """Base of every error kbisect raises on purpose."""

    exit_code = 1

    def report(self) -> str:
        """What the user sees: one line, no traceback."""
        return f"kbisect: {self}"


class UserError(KbisectError):
    """The user asked for something wrong: fix the input and run again."""

    exit_code = 2


class InfraError(KbisectError):
    """The lab, the machine or a tool failed: not the user's fault, not the kernel's."""

    exit_code = 3


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
