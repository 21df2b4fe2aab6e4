"""What every task shares: error handling, project loading, output."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.parser.argument import Argument
from invoke.tasks import Task as InvokeTask
from invoke.tasks import task as invoke_task

from kbisect.config import BuildProfile, Project, load_project
from kbisect.errors import KbisectError, UserError
from kbisect.lab.lab import install_exit_handlers


class Task(InvokeTask[Any]):
    """invoke's Task, except that asking for its arguments twice keeps the flag help.

    invoke pops entries from `help` while building arguments, so a second parse in the same
    process (tests, `--list` then a task) would lose them.
    """

    def get_arguments(self, ignore_unknown_help: bool | None = None) -> list[Argument]:
        saved: dict[str, str] = dict(self.help)
        try:
            arguments: list[Argument] = super().get_arguments(ignore_unknown_help)
            return arguments
        finally:
            self.help = saved


def task(*, help: dict[str, str], **kwargs: Any) -> Callable[[Callable[..., Any]], InvokeTask[Any]]:
    """invoke's @task, plus kbisect's error contract: user error exit 2, infra error exit 3.

    A KbisectError becomes invoke's Exit, which prints the message to stderr without a traceback.
    """

    def wrap(fn: Callable[..., Any]) -> InvokeTask[Any]:
        @functools.wraps(fn)
        def body(c: Context, *args: Any, **kw: Any) -> Any:
            install_exit_handlers()
            try:
                return fn(c, *args, **kw)
            except KbisectError as exc:
                raise Exit(exc.report(), code=exc.exit_code) from None
            except KeyboardInterrupt:
                raise Exit("kbisect: interrupted", code=130) from None

        made: InvokeTask[Any] = invoke_task(help=help, klass=Task, **kwargs)(body)
        return made

    return wrap


def project(root: str | None = None, *, required: bool = True) -> Project:
    """The project configuration (root from --root, $KBISECT_ROOT or the working directory).

    Outside any project this is a user error, unless `required=False` (a task that also works
    on a plain repository), which gets built-in defaults."""
    return load_project(Path(root).resolve() if root else None, required=required)


def say(text: str = "") -> None:
    print(text, flush=True)


def warn(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def choose_profile(profiles: dict[str, BuildProfile], name: str | None) -> BuildProfile:
    """A build profile by name; without one, the only profile or xen-dom0."""
    if name is None:
        if len(profiles) == 1:
            return next(iter(profiles.values()))
        name = "xen-dom0"
    if name not in profiles:
        raise UserError(
            f"unknown build profile {name!r} (known: {', '.join(sorted(profiles)) or 'none'})"
        )
    return profiles[name]
