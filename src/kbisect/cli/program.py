"""The `kbisect` program: invoke's Program, with a shell user's habits.

- `kbisect TASK --help` and `-h` show the task's help wherever they appear (before a missing
  argument is complained about, and never taken as a value of an argument still missing).
- Only kbisect's own options exist: invoke's options for running shell commands, loading
  collections and config files are not offered, and are refused like any unknown flag.
- A usage mistake (unknown task or flag, missing argument or value, bad value) is one line on
  stderr and exit 2; a typo'd task or flag gets a "did you mean".
- Output cut short by its reader (`kbisect --help | head -1`) ends quietly.
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
import sys
from collections.abc import Iterable, Iterator

from invoke.completion.complete import complete, print_completion_script
from invoke.exceptions import Exit, ParseError
from invoke.parser.argument import Argument
from invoke.parser.context import ParserContext
from invoke.program import Program

from kbisect.cli.arguments import UsageError, flag_of
from kbisect.errors import ExitCode

HELP_FLAGS = ("--help", "-h")
SHELLS = ("bash", "zsh", "fish")  # the completion scripts invoke has


class KbisectProgram(Program):
    """invoke's Program with the rules in this module's docstring; invoke parses, as before."""

    def core_args(self) -> list[Argument]:
        return [
            Argument(
                names=("help", "h"),
                optional=True,
                help="Show this help, or a task's: `kbisect TASK --help` (or -h).",
            ),
            Argument(names=("version", "V"), kind=bool, default=False, help="Print the version."),
            Argument(
                names=("list", "l"),
                optional=True,
                help="List the tasks, or those of one namespace (`--list lab`).",
            ),
            Argument(
                names=("print-completion-script",),
                default="",
                help="Print the shell completion script for bash or zsh "
                "(`source <(kbisect --print-completion-script bash)`).",
            ),
            Argument(
                names=("complete",),
                kind=bool,
                default=False,
                help="Print completion candidates for the words after `--` (the script's helper).",
            ),
        ]

    def run(self, argv: list[str] | None = None, exit: bool = True) -> None:
        code = self.run_for_status(argv)
        if exit:
            sys.exit(int(code))

    def run_for_status(self, argv: list[str] | None) -> ExitCode | int:
        """Parse and run; returns the exit status (messages already printed)."""
        try:
            self.create_config()
            self.parse_core(argv)
            self.parse_collection()
            self.parse_tasks()
            self.parse_cleanup()
            self.config.merge()
            self.execute()
            sys.stdout.flush()  # so that a reader gone away is noticed here, not at exit
        except ParseError as exc:
            print(self.usage_line(exc), file=sys.stderr, flush=True)
            return ExitCode.USAGE
        except Exit as exc:
            if exc.message:
                print(exc.message, file=sys.stderr, flush=True)
            return exc.code
        except KeyboardInterrupt:
            return ExitCode.INTERRUPTED
        except BrokenPipeError:
            # Nothing more can be written to the reader; keep Python's exit flush quiet too.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return ExitCode.OUTPUT_CLOSED
        return ExitCode.OK

    def parse_core(self, argv: list[str] | None) -> None:
        self.normalize_argv(argv)
        self.parse_core_args()
        if self.core.remainder and not self.args.complete.value:
            raise UsageError(f"unexpected arguments after --: {self.core.remainder}")
        if self.args.version.value:
            self.print_version()
            raise Exit
        shell = self.args["print-completion-script"].value
        if shell:
            if shell not in SHELLS:
                expected = ", ".join(SHELLS)
                raise UsageError(f"--print-completion-script: expected {expected}, got {shell!r}")
            print_completion_script(shell=shell, names=self.binary_names)
            raise Exit

    def parse_tasks(self) -> None:
        self.parser = self._make_parser()
        tokens = self.core.unparsed
        # Help wins over everything else a task was given, as with most programs: a required
        # argument still missing must not swallow `--help` as its value.
        asked = next((task for token, task in self.tasks_of(tokens) if token in HELP_FLAGS), None)
        if asked is not None:
            self.print_task_help(asked)
            raise Exit
        try:
            super().parse_tasks()
        except UsageError as exc:
            named = [task for _, task in self.tasks_of(tokens) if task is not None]
            if named:
                exc.context = self.parser.contexts[named[-1]]
            raise

    def tasks_of(self, tokens: list[str]) -> Iterator[tuple[str, str | None]]:
        """Each token with the task it belongs to (None before the first task)."""
        contexts = self.parser.contexts
        current: ParserContext | None = None
        name: str | None = None
        expecting_value = False
        for token in tokens:
            if expecting_value:
                expecting_value = False
            elif token in contexts:
                current, name = contexts[token], token
            elif current is not None and token in current.flags:
                expecting_value = current.flags[token].takes_value
            yield token, name

    def parse_cleanup(self) -> None:
        wanted = self.args.help.value
        if wanted is True:
            self.print_help()
            raise Exit
        if wanted:
            if wanted not in self.parser.contexts:
                raise ParseError(f"No idea what {wanted!r} is!")
            self.print_task_help(wanted)
            raise Exit
        listing = self.args.list.value
        if listing:
            if isinstance(listing, str):
                try:
                    self.scoped_collection = self.collection.subcollection_from_path(listing)
                except KeyError:
                    raise UsageError(
                        f"--list: no namespace {listing!r}"
                        f"{suggestion(listing, self.collection.collections)}"
                    ) from None
                self.list_root = listing
            self.list_tasks()
            raise Exit
        if self.args.complete.value:
            complete(
                names=self.binary_names,
                core=self.core,
                initial_context=self.initial_context,
                collection=self.collection,
                parser=self._make_parser(),
            )
        if not self.tasks and not self.collection.default:
            self.no_tasks_given()

    def print_help(self) -> None:
        print(f"Usage: {self.binary} TASK [--task-options] ...   (`{self.binary} TASK --help`)")
        print("")
        print("Options:")
        print("")
        self.print_columns(self.initial_context.help_tuples())
        self.list_tasks()

    def task_list_opener(self, extra: str = "") -> str:
        return "Tasks" if not self.list_root else f"Tasks in {self.list_root}"

    def print_task_help(self, name: str) -> None:
        context = self.parser.contexts[name]
        usage = [self.binary, name]
        for arg in context.positional_args:
            usage.append(f"[{flag_of(str(arg.name))}] {str(arg.name).upper()}")
        print(f"Usage: {' '.join(usage)} [options]")
        print("")
        doc = inspect.getdoc(self.collection[name]) or ""
        for line in doc.splitlines():
            print(f"{self.leading_indent}{line}" if line.strip() else "")
        print("")
        tuples = context.help_tuples()
        print("Options:" if tuples else "Options: none")
        print("")
        if tuples:
            self.print_columns(tuples)

    def usage_line(self, error: ParseError) -> str:
        return usage_line(error, self.parser_names(), self.binary)

    def parser_names(self) -> list[str]:
        names: list[str] = []
        assert self.namespace is not None  # kbisect's program always has its collection
        for primary, aliases in self.namespace.task_names.items():
            names += [primary, *aliases]
        return names


_UNKNOWN = re.compile(r"^No idea what (['\"])(?P<token>.*)\1 is!$")
_FLAG = re.compile(r"^Flag <\w+: (?P<name>[\w-]+)\b.*(?P<what>needed value|doesn't take any value)")
_NO_POSITIONAL = re.compile(r"did not receive required positional arguments")


def suggestion(word: str, candidates: Iterable[str]) -> str:
    """' (did you mean X?)' for a close match among the candidates, else ''."""
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def usage_line(error: ParseError, task_names: list[str], binary: str) -> str:
    """invoke's parse errors (and kbisect's own), said as one line a shell user expects."""
    context = error.context
    where = binary
    if context is not None and context.name:  # `bisect`, not `bisect.bisect`
        where = f"{binary} {min((context.name, *context.aliases), key=len)}"
    see = f"(see `{where} --help`)"
    text = str(error)
    token: str | None = None
    if isinstance(error, UsageError):
        if error.unknown_flag is None:
            return f"{where}: {text}"
        token = error.unknown_flag
    elif m := _UNKNOWN.match(text):
        token = m.group("token")
    if token is not None:
        if token.startswith("-"):
            flags = list(context.flags) if context is not None else []
            return f"{where}: unknown flag {token}{suggestion(token, flags)} {see}"
        if context is not None and context.name:
            return f"{where}: unexpected argument {token!r} {see}"
        close = suggestion(token, task_names)
        return f"{binary}: unknown task {token!r}{close} (see `{binary} --list`)"
    if m := _FLAG.match(text):
        what = "needs a value" if m.group("what") == "needed value" else "takes no value"
        return f"{where}: {flag_of(m.group('name'))} {what} {see}"
    if _NO_POSITIONAL.search(text) and context is not None:
        missing = ", ".join(flag_of(str(a.name)) for a in context.missing_positional_args)
        return f"{where}: missing {missing} {see}"
    return f"{where}: {text}"
