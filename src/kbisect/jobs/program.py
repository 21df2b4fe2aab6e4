"""The program a job runs on a host, behind one seam.

A job's `program:` names a program kbisect knows (PROGRAMS: gntstress) or is the path of the
user's own program. Either way the runner asks the same four things of it (`JobProgram`): the
local binary to ship (built first if need be), its command line on the host from the job's
arguments and the subtests to run alone, the subtests a run should report, and its output read
as subtest results for the classifier. Another program (an LTP test, say) is a module with a
class like `GntstressProgram` and a line in PROGRAMS.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from kbisect.config import Job
from kbisect.errors import InfraError
from kbisect.jobs.gntstress import GntstressProgram, GntstressReport, parse_output


class JobProgram(Protocol):
    def binary(self, cache_dir: Path) -> Path:
        """The local executable that is shipped to the host (built into cache_dir if need be)."""
        ...

    def command(self, remote: str, args: Sequence[str], only: Sequence[str]) -> list[str]:
        """argv on the host: the shipped binary at `remote`, the job's args, and what makes it
        run only the subtests in `only` (when it can; empty: all of them)."""
        ...

    def expected(self, args: Sequence[str], only: Sequence[str]) -> tuple[str, ...] | None:
        """The subtests a run with these arguments reports; None when only its output says."""
        ...

    def parse(self, stdout: str, expected: Sequence[str] | None) -> GntstressReport:
        """The run's output as subtest results (never raises: what is wrong is in the report)."""
        ...


PROGRAMS: dict[str, JobProgram] = {
    "gntstress": GntstressProgram(),
}
"""The programs a job may name instead of giving a path."""


class OwnProgram:
    """A user's own program (`program: /path`), shipped as it is. It speaks gntstress's line
    format; its options are unknown, so it always runs every subtest and is expected to report
    what it reports."""

    def __init__(self, job: str, path: Path) -> None:
        self.job = job
        self.path = path

    def binary(self, cache_dir: Path) -> Path:
        if not self.path.is_file():
            raise InfraError(f"job {self.job}: program {self.path} does not exist here")
        return self.path

    def command(self, remote: str, args: Sequence[str], only: Sequence[str]) -> list[str]:
        return [remote, *args]

    def expected(self, args: Sequence[str], only: Sequence[str]) -> tuple[str, ...] | None:
        return None

    def parse(self, stdout: str, expected: Sequence[str] | None) -> GntstressReport:
        if expected is None:
            expected = [r.name for r in parse_output(stdout, ()).results]
        return parse_output(stdout, expected)


def program_of(job: Job) -> JobProgram:
    """The job's program: one PROGRAMS names, else the user's own at the path given."""
    return PROGRAMS.get(job.program) or OwnProgram(job.name, Path(job.program).expanduser())
