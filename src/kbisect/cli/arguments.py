"""Task flags: invoke's Task and Argument, with kbisect's rules.

- `-h` is always help (and `-V`, `-l` the program's own), never a task's short flag: a task's
  `--host` gets another letter.
- `--root` and `--json`, which many tasks share, have no short flag.
- Every value is converted and checked while the command line is parsed, so a bad value is a
  usage error (exit 2, one line naming the flag) before any work starts. A task declares its
  checks, e.g. `task(..., checks={"repeat": positive_int})`; a flag without one is still
  converted to its kind (`--resume abc` is refused because resume is an int).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from invoke.exceptions import ParseError
from invoke.parser.argument import Argument
from invoke.tasks import Task as InvokeTask

Convert = Callable[[str], Any]

PROGRAM_SHORT_FLAGS = frozenset({"h", "V", "l"})  # --help, --version, --list
LONG_ONLY = frozenset({"root", "json"})


class UsageError(ParseError):
    """A command-line mistake found by kbisect rather than by invoke's parser: a bad value, or
    (`unknown_flag`) a flag-like word where an argument's value was expected. The program adds
    the task it belongs to."""

    def __init__(self, message: str, unknown_flag: str | None = None) -> None:
        super().__init__(message)
        self.unknown_flag = unknown_flag


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("expected an integer") from None


def number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a number") from None
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def positive_int(text: str) -> int:
    value = integer(text)
    if value < 1:
        raise ValueError("expected a whole number of at least 1")
    return value


def positive_number(text: str) -> float:
    value = number(text)
    if value <= 0:
        raise ValueError("expected a number greater than 0")
    return value


def run_id(text: str) -> int:
    try:
        return positive_int(text)
    except ValueError:
        raise ValueError("expected a run id (a number)") from None


def port_number(text: str) -> int:
    value = integer(text)
    if not 0 <= value <= 65535:
        raise ValueError("expected a port from 1 to 65535 (0: any free port)")
    return value


_BY_KIND: dict[type, Convert] = {int: integer, float: number}


def flag_of(name: str) -> str:
    return f"--{name.replace('_', '-')}"


class CheckedArgument(Argument):
    """An Argument converted and checked as it is parsed; a bad value raises UsageError."""

    def __init__(self, *, convert: Convert | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.convert = convert or _BY_KIND.get(self.kind)

    def set_value(self, value: Any, cast: bool = True) -> None:
        if self.positional and value in ("--help", "-h"):
            # only under the stock `invoke` program: kbisect's own program sees --help first
            raise UsageError(
                f"{value} where {flag_of(str(self.name))}'s value was expected: for a task's "
                "help, `invoke --help TASK` (or `kbisect TASK --help`)"
            )
        if self.positional and isinstance(value, str) and value.startswith("-"):
            # invoke gives a missing positional argument whatever comes next, a mistyped flag
            # included: `kbisect build --tre x` must not build a tree named "--tre".
            raise UsageError(f"unknown flag {value}", unknown_flag=value)
        if cast and isinstance(value, str) and self.convert is not None:
            try:
                value = self.convert(value)
            except ValueError as exc:
                raise UsageError(f"{flag_of(str(self.name))}: {exc}, got {value!r}") from None
            cast = False
        super().set_value(value, cast)


class Task(InvokeTask[Any]):
    """invoke's Task with kbisect's flag rules (see the module's docstring); `checks` maps
    parameter names to converters that raise ValueError with what was expected."""

    def __init__(self, body: Callable[..., Any], *, checks: dict[str, Convert], **kw: Any) -> None:
        super().__init__(body, **kw)
        self.checks = dict(checks)

    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        opts: dict[str, Any] = super().arg_opts(name, default, taken_names | PROGRAM_SHORT_FLAGS)
        if name in LONG_ONLY:
            opts["names"] = opts["names"][:1]
        return opts

    def get_arguments(self, ignore_unknown_help: bool | None = None) -> list[Argument]:
        # invoke pops entries from `help` while building arguments: keep them for the next
        # parse in the same process (tests, `--list` then a task).
        saved: dict[str, str] = dict(self.help)
        try:
            plain: list[Argument] = super().get_arguments(ignore_unknown_help)
        finally:
            self.help = saved
        unknown = set(self.checks) - {a.name for a in plain}
        if unknown:
            raise ValueError(f"checks for parameters {self.name} does not have: {unknown}")
        return [
            CheckedArgument(
                names=a.names,
                kind=a.kind,
                default=a.default,
                help=a.help,
                positional=a.positional,
                optional=a.optional,
                incrementable=a.incrementable,
                attr_name=a.attr_name,
                convert=self.checks.get(str(a.name)),
            )
            for a in plain
        ]
