"""gntstress: the grant-map stress program shipped to Xen hosts, its build, its output parser,
and `GntstressProgram`, what a job that names it runs (kbisect.jobs.program).

gntstress.c (beside this file) is built static so that it runs on a bare dom0 initramfs. Each
subtest runs in its own forked child under its own deadline and prints exactly one line:

    GNTSTRESS <name> <PASS|FAIL|SKIP> errno=<n> detail=<text to end of line>

and the run ends with ``GNTSTRESS-SUMMARY pass=N fail=N skip=N``. A child killed by a signal is a
FAIL whose detail starts ``killed by signal N (SIGxxx)``; one past its deadline is a FAIL whose
detail starts ``timeout after Ns``. Exit status: 0 no FAIL (all PASS or SKIP), 1 at least one
FAIL, 2 usage error, 3 internal error of gntstress itself.

The parser never raises on bad input: malformed lines, missing subtests, duplicates and a
missing summary (a truncated run) are recorded in the report for the caller to judge.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

from kbisect import processes
from kbisect.errors import InfraError
from kbisect.processes import CommandExited, Output, last_lines

SUBTESTS: tuple[str, ...] = (
    "self-map",
    "odirect-read",
    "odirect-write",
    "io-submit",
    "vmsplice",
    "process-vm-readv",
    "proc-pid-mem",
    "move-pages",
    "numa-soak",
    "mbind-soak",
    "fork",
    "mremap-grow",
    "partial-munmap",
    "policy-lifecycle",
    "churn",
)
"""The subtests in the order gntstress runs them (the names used by experiment files)."""

SELFTESTS: tuple[str, ...] = ("selftest-crash", "selftest-hang")
"""Hidden subtests that test gntstress's own runner (--selftest-crash, --selftest-hang)."""

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3

CFLAGS: tuple[str, ...] = ("-static", "-O2", "-Wall", "-Wextra")
SOURCE_NAME = "gntstress.c"
SELFTEST_BACKEND_MARK = "[selftest-backend anon] "

_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
_RECORD = re.compile(
    r"GNTSTRESS (?P<name>\S+) (?P<status>\S+) errno=(?P<errno>\S*) detail=(?P<d>.*)"
)
_SUMMARY = re.compile(r"GNTSTRESS-SUMMARY pass=(\d+) fail=(\d+) skip=(\d+)")
_SIGNAL = re.compile(r"^killed by signal (\d+)\b")
_TIMEOUT = re.compile(r"^timeout after (\d+)s\b")


class Status(StrEnum):
    PASS = "PASS"  # noqa: S105 (a test status, not a password)
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass(frozen=True)
class SubtestResult:
    """One ``GNTSTRESS`` line."""

    name: str
    status: Status
    errno: int
    detail: str
    line: int
    signal: int | None = None
    """The signal that killed the subtest's child, if it was killed."""
    timed_out: bool = False
    """The child ran past its deadline and was killed."""


@dataclass(frozen=True)
class Summary:
    passed: int
    failed: int
    skipped: int


@dataclass(frozen=True)
class BadLine:
    """A line that looks like gntstress output but cannot be read."""

    line: int
    text: str
    reason: str


@dataclass
class GntstressReport:
    """Everything one run printed, and everything wrong with it."""

    expected: tuple[str, ...]
    results: list[SubtestResult] = field(default_factory=list)
    summary: Summary | None = None
    malformed: list[BadLine] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    """Expected subtests without a line."""
    unexpected: list[str] = field(default_factory=list)
    """Subtests reported although not expected."""
    duplicates: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """Other inconsistencies: summary counts, records after the summary, a cut-off last line."""
    noise_lines: int = 0
    """Lines that are not gntstress records at all (stderr mixed in, console messages)."""
    selftest_backend: bool = False
    """The run used --selftest-backend: its results say nothing about gntdev."""

    @property
    def complete(self) -> bool:
        """The run got to its summary line (False: truncated, host died or job killed)."""
        return self.summary is not None

    @property
    def clean(self) -> bool:
        """Complete, and nothing malformed, missing, duplicated, unexpected or inconsistent."""
        return self.complete and not (
            self.malformed or self.missing or self.unexpected or self.duplicates or self.problems
        )

    @property
    def interrupted_in(self) -> str | None:
        """For an incomplete run: the first expected subtest that never reported."""
        if self.complete or not self.missing:
            return None
        return self.missing[0]

    def result(self, name: str) -> SubtestResult | None:
        for r in self.results:
            if r.name == name:
                return r
        return None

    def with_status(self, status: Status) -> list[str]:
        return [r.name for r in self.results if r.status is status]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (used by the golden tests and for storing raw results)."""
        return {
            "complete": self.complete,
            "clean": self.clean,
            "selftest_backend": self.selftest_backend,
            "interrupted_in": self.interrupted_in,
            "results": [
                {
                    "name": r.name,
                    "status": r.status.value,
                    "errno": r.errno,
                    "signal": r.signal,
                    "timed_out": r.timed_out,
                    "detail": r.detail,
                    "line": r.line,
                }
                for r in self.results
            ],
            "summary": None
            if self.summary is None
            else {
                "pass": self.summary.passed,
                "fail": self.summary.failed,
                "skip": self.summary.skipped,
            },
            "malformed": [
                {"line": b.line, "text": b.text, "reason": b.reason} for b in self.malformed
            ],
            "missing": list(self.missing),
            "unexpected": list(self.unexpected),
            "duplicates": list(self.duplicates),
            "problems": list(self.problems),
            "noise_lines": self.noise_lines,
        }


def _parse_record(text: str, line_no: int) -> SubtestResult | str:
    """A result, or the reason the record is unreadable."""
    m = _RECORD.fullmatch(text)
    if m is None:
        return "not 'GNTSTRESS <name> <PASS|FAIL|SKIP> errno=<n> detail=<text>'"
    name, status, errno_text, detail = m["name"], m["status"], m["errno"], m["d"]
    if not _NAME.fullmatch(name):
        return f"bad subtest name {name!r}"
    if status not in Status.__members__:
        return f"bad status {status!r}"
    if not errno_text.isdigit():
        return f"bad errno {errno_text!r}"
    sig = _SIGNAL.match(detail)
    return SubtestResult(
        name=name,
        status=Status(status),
        errno=int(errno_text),
        detail=detail,
        line=line_no,
        signal=int(sig[1]) if sig else None,
        timed_out=_TIMEOUT.match(detail) is not None,
    )


def parse_output(text: str, expected: Sequence[str] = SUBTESTS) -> GntstressReport:
    """Read gntstress's stdout (stderr or console noise mixed in is tolerated).

    ``expected`` is what the run was asked for (all subtests, or the --only list). Never raises.
    """
    report = GntstressReport(expected=tuple(expected))
    seen: set[str] = set()
    lines = text.split("\n")
    cut_off = lines[-1] != ""  # the last line has no newline: output was cut off
    if not cut_off:
        lines.pop()
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r")
        stripped = line.rstrip()
        if not stripped:
            continue
        at = stripped.find("GNTSTRESS")
        if at < 0:
            report.noise_lines += 1
            continue
        record = stripped[at:]
        if at > 0:
            report.problems.append(f"line {number}: record not at the start of the line")
        if record.startswith("GNTSTRESS-SUMMARY"):
            m = _SUMMARY.fullmatch(record)
            if m is None:
                report.malformed.append(BadLine(number, line, "unreadable summary"))
            elif report.summary is not None:
                report.malformed.append(BadLine(number, line, "second summary line"))
            else:
                report.summary = Summary(int(m[1]), int(m[2]), int(m[3]))
            continue
        parsed = _parse_record(record, number)
        if isinstance(parsed, str):
            reason = parsed
            if cut_off and number == len(lines):
                reason += " (last line cut off)"
            report.malformed.append(BadLine(number, line, reason))
            continue
        if cut_off and number == len(lines):
            report.problems.append(f"line {number}: last line has no newline (cut off?)")
        if report.summary is not None:
            report.problems.append(f"line {number}: {parsed.name} reported after the summary")
        if parsed.name in seen:
            report.duplicates.append(parsed.name)
            continue
        seen.add(parsed.name)
        if parsed.detail.startswith(SELFTEST_BACKEND_MARK):
            report.selftest_backend = True
        if parsed.name not in report.expected:
            report.unexpected.append(parsed.name)
        report.results.append(parsed)
    report.missing = [name for name in report.expected if name not in seen]
    if report.summary is not None:
        counted = Summary(
            passed=len(report.with_status(Status.PASS)),
            failed=len(report.with_status(Status.FAIL)),
            skipped=len(report.with_status(Status.SKIP)),
        )
        if counted != report.summary:
            s = report.summary
            report.problems.append(
                f"summary says pass={s.passed} fail={s.failed} skip={s.skipped}, lines say "
                f"pass={counted.passed} fail={counted.failed} skip={counted.skipped}"
            )
    return report


# --------------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------------

# ld without libc.a ("cannot find -lc"), or cc1 without libc's headers (gntstress.c includes
# libc headers only): both mean libc6-dev is missing.
_NO_STATIC_LIBC = re.compile(
    r"cannot find -l(?:c|gcc_eh|gcc)\b|fatal error: [\w/.-]+\.h: No such file or directory"
)


def expected_subtests(args: Sequence[str]) -> tuple[str, ...]:
    """The subtests a run with these arguments reports (all, or those named by --only)."""
    chosen: list[str] = []
    for i, arg in enumerate(args):
        value = None
        if arg == "--only" and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--only="):
            value = arg.split("=", 1)[1]
        if value is not None:
            chosen.extend(name for name in value.split(",") if name)
    return tuple(dict.fromkeys(chosen)) if chosen else SUBTESTS


def source_text() -> bytes:
    """The shipped gntstress.c."""
    return resources.files("kbisect.jobs").joinpath(SOURCE_NAME).read_bytes()


def _compiler_identity(cc: str, timeout: float) -> str:
    done = processes.run([cc, "--version"], deadline=timeout, output=Output.MERGED, check=False)
    return done.stdout.splitlines()[0] if done.stdout else ""


def build_gntstress(out_dir: Path, *, cc: str = "gcc", timeout: float = 120.0) -> Path:
    """Build gntstress static into out_dir and return the binary's path.

    The binary is named by a hash of the source, the flags and the compiler's identity, so an
    unchanged source is not rebuilt. Raises InfraError when the compiler or the static C library
    (Debian: libc6-dev) is missing or the build fails.
    """
    compiler = shutil.which(cc)
    if compiler is None:
        raise InfraError(f"{cc} is not installed; gntstress needs gcc and libc6-dev")
    source = source_text()
    ident = _compiler_identity(compiler, timeout)
    key = hashlib.sha256(
        source + b"\0" + " ".join(CFLAGS).encode() + b"\0" + ident.encode()
    ).hexdigest()[:16]
    binary = out_dir / f"gntstress-{key}"
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".gntstress-build-") as tmp:
        work = Path(tmp)
        (work / SOURCE_NAME).write_bytes(source)
        argv = [compiler, *CFLAGS, "-o", "gntstress", SOURCE_NAME]
        what = "building gntstress"
        done = processes.run(
            argv, deadline=timeout, cwd=work, output=Output.MERGED, check=False, what=what
        )
        if done.returncode != 0:
            if _NO_STATIC_LIBC.search(done.stdout):
                raise InfraError(
                    "cannot build gntstress static: the static C library is missing "
                    "(install libc6-dev)"
                )
            raise CommandExited(argv, done.returncode, last_lines(done.stdout, 5), what=what)
        (work / "gntstress").replace(binary)
    return binary


class GntstressProgram:
    """gntstress as a job's program (kbisect.jobs.program): built here, static, and told with
    `--only` which subtests to run."""

    def binary(self, cache_dir: Path) -> Path:
        return build_gntstress(cache_dir / "jobs")

    def command(self, remote: str, args: Sequence[str], only: Sequence[str]) -> list[str]:
        return [remote, *_with_only(args, only)]

    def expected(self, args: Sequence[str], only: Sequence[str]) -> tuple[str, ...] | None:
        return expected_subtests(_with_only(args, only))

    def parse(self, stdout: str, expected: Sequence[str] | None) -> GntstressReport:
        return parse_output(stdout, SUBTESTS if expected is None else expected)


def _with_only(args: Sequence[str], only: Sequence[str]) -> list[str]:
    return [*args, "--only", ",".join(only)] if only else list(args)
