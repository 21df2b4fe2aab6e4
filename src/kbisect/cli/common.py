"""What every task shares: error handling, project loading, output."""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from invoke.context import Context
from invoke.exceptions import Exit

from kbisect.cli.arguments import Convert, Task
from kbisect.config import Project, load_project
from kbisect.config.project import STORE_ENV
from kbisect.errors import ExitCode, KbisectError
from kbisect.lab.lab import install_exit_handlers

DEBUG_VARIABLE = "KBISECT_DEBUG"

SHARED_HELP = {
    "root": "Project directory (default: $KBISECT_ROOT, else the nearest upwards with configs/).",
    "json": "Print the result as one JSON document on stdout; everything else goes to stderr.",
}


@dataclass
class TaskResult:
    """What a task returns when it has a result for scripts (`--json`): the document, and how
    the task exits (a code other than OK prints `message` on stderr)."""

    document: dict[str, Any]
    code: ExitCode = ExitCode.OK
    message: str = ""


def task(
    *, help: dict[str, str], checks: dict[str, Convert] | None = None, **kwargs: Any
) -> Callable[[Callable[..., Any]], Task]:
    """invoke's @task, plus kbisect's contract: user error exit 2, infra error exit 3, one line
    on stderr (and the traceback too with KBISECT_DEBUG=1); `checks` convert and check flag
    values at parse time (kbisect.cli.arguments); a task taking `json` that returns a TaskResult
    prints its document when `--json` is given, with stdout kept for it alone."""

    def wrap(fn: Callable[..., Any]) -> Task:
        params = inspect.signature(fn).parameters
        shared = {name: text for name, text in SHARED_HELP.items() if name in params}

        @functools.wraps(fn)
        def body(c: Context, *args: Any, **kw: Any) -> None:
            install_exit_handlers()
            as_json = bool(kw.get("json"))
            try:
                with stdout_to_stderr() if as_json else contextlib.nullcontext():
                    result = fn(c, *args, **kw)
            except KbisectError as exc:
                if os.environ.get(DEBUG_VARIABLE):
                    traceback.print_exc()
                if as_json:
                    print_json({"exit_code": int(exc.exit_code), "error": str(exc)})
                raise Exit(exc.report(), code=exc.exit_code) from None
            except KeyboardInterrupt:
                raise Exit("kbisect: interrupted", code=ExitCode.INTERRUPTED) from None
            if isinstance(result, TaskResult):
                if as_json:
                    print_json({**result.document, "exit_code": int(result.code)})
                if result.code:
                    raise Exit(result.message, code=result.code)

        return Task(body, help={**shared, **help}, checks=checks or {}, **kwargs)

    return wrap


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """While a task runs with --json, everything written to stdout (its own lines, a child
    process's output) goes to stderr, so that stdout carries the JSON document alone."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def print_json(document: dict[str, Any]) -> None:
    print(json.dumps(document, indent=2, default=str), flush=True)


def project(root: str | None = None, *, required: bool = True) -> Project:
    """The project configuration (root from --root, $KBISECT_ROOT or the working directory).

    Outside any project this is a user error, unless `required=False` (a task that also works
    on a plain repository), which gets built-in defaults.

    A shared store in the settings is exported as $KBISECT_STORE (unless that is set already),
    so that every store this command and its workers open is that one."""
    p = load_project(Path(root).resolve() if root else None, required=required)
    if p.settings.store and not os.environ.get(STORE_ENV):
        os.environ[STORE_ENV] = p.settings.store
    return p


def say(text: str = "") -> None:
    print(text, flush=True)


def warn(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
