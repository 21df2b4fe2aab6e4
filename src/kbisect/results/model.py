"""The records the results store keeps: plain data shared by the classifier, the store and exports.

This module depends on nothing else in kbisect, so any stage (the jobs classifier producing
verdicts, the store persisting them, JUnit and the browser reading them) can use one vocabulary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple


class ResultStatus(StrEnum):
    """KCIDB-like test status of a cell or a subtest (docs/jobs.md, "Words")."""

    PASS = "PASS"  # noqa: S105 (a test status, not a password)
    FAIL = "FAIL"
    """The kernel under test misbehaved."""
    ERROR = "ERROR"
    """The lab or the tool failed: never a statement about the kernel."""
    SKIP = "SKIP"
    """Could not be tested."""
    MISS = "MISS"
    """Planned, never ran (e.g. subtests after the one the host died in)."""


class RunStatus(StrEnum):
    RUNNING = "running"
    """Started and not finished: still going, or the process died (the run can be resumed)."""
    FINISHED = "finished"
    ABORTED = "aborted"


def check_relative(path: str) -> str:
    """``path`` if it stays inside the results directory; ValueError otherwise: empty, absolute
    (a leading "/"), a ".." part, a backslash or a NUL.

    String tests, the same as PurePosixPath's ``is_absolute()`` and ``".." in parts`` (its parts
    are the "/"-separated names without the empty and "." ones, and ".." is kept): every log
    reference read from the store is checked, and building the path object was most of it."""
    if (
        not path
        or path[0] == "/"
        or "\\" in path
        or "\0" in path
        or (".." in path and ".." in path.split("/"))
    ):
        raise ValueError(f"log path must be relative to the results directory: {path!r}")
    return path


class LogKind(StrEnum):
    JOB_OUTPUT = "job-output"
    DMESG = "dmesg"
    CONSOLE = "console"
    BUILD_LOG = "build-log"
    JUNIT = "junit"
    LAVA_LOG = "lava-log"  # a LAVA host's job log, whole


@dataclass(frozen=True)
class LogRef:
    """A log file, by its path relative to the results directory (the store holds no log text)."""

    kind: LogKind
    path: str

    def __post_init__(self) -> None:
        check_relative(self.path)


@dataclass(frozen=True)
class SubtestRecord:
    """One subtest of a job, with the verdict the classifier gave it."""

    name: str
    status: ResultStatus
    errno: int = 0
    detail: str = ""
    signal: int | None = None
    timed_out: bool = False


@dataclass(frozen=True)
class Evidence:
    """One kernel or hypervisor event found in dmesg or on the console.

    ``lines`` are the matching line then its context (e.g. the Call Trace that follows), as they
    appear in the log. ``also`` names further signatures seen within the same event (an Oops line
    after a BUG, the Call Trace). Weak evidence (``strong`` False) is reported but does not fail a
    cell on its own. ``more`` counts further events of the same signature in the same log that
    were counted but not kept.
    """

    signature: str
    source: LogKind
    line: int
    lines: tuple[str, ...]
    also: tuple[str, ...] = ()
    strong: bool = True
    more: int = 0

    @property
    def headline(self) -> str:
        return self.lines[0] if self.lines else ""


class CellIdentity(NamedTuple):
    """What makes a cell unique within a run."""

    tree: str
    rev: str
    variant: str
    profile: str
    host: str
    job: str
    repeat: int


@dataclass(frozen=True)
class CellRecord:
    """One (revision, variant, build profile, host, job, repeat) run and all it produced.

    ``variant`` is "" for the tree as it is. ``id`` and ``run_id`` are set by the store.
    """

    tree: str
    rev: str
    variant: str
    profile: str
    host: str
    job: str
    repeat: int
    status: ResultStatus
    reason: str = ""
    commit: str | None = None
    patch_hash: str | None = None
    build_key: str | None = None
    started: datetime | None = None
    finished: datetime | None = None
    fingerprint: dict[str, str] = field(default_factory=dict)
    subtests: tuple[SubtestRecord, ...] = ()
    logs: tuple[LogRef, ...] = ()
    evidence: tuple[Evidence, ...] = ()
    boot_seconds: float | None = None
    """How long the deploy that booted this cell's kernel took, from its start to the verified
    login (power cycles included); None when the cell ran on a kernel an earlier cell booted,
    booted none, or was recorded before stores kept it."""
    id: int | None = None
    run_id: int | None = None

    @property
    def identity(self) -> CellIdentity:
        return CellIdentity(
            self.tree, self.rev, self.variant, self.profile, self.host, self.job, self.repeat
        )


@dataclass(frozen=True)
class RunRecord:
    """One invocation: an ad-hoc run, a nightly, or a bisection's cells."""

    id: int
    kind: str
    pipeline: str | None
    started: datetime
    finished: datetime | None
    status: RunStatus
    meta: dict[str, Any] = field(default_factory=dict)


_BUILD_KEY = re.compile(r"[0-9a-f]{8,64}")


@dataclass(frozen=True)
class BuildRecord:
    """A build by its content key (kbisect.build.key): whether it worked, its log, its metadata."""

    key: str
    status: str
    """As the builder says: "built", "hit" or "failed"."""
    log: str | None = None
    """The build log's path relative to the results directory."""
    errors: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    recorded: datetime | None = None

    def __post_init__(self) -> None:
        if not _BUILD_KEY.fullmatch(self.key):
            raise ValueError(f"not a build key: {self.key!r}")
        if self.log is not None:
            check_relative(self.log)


@dataclass(frozen=True)
class TrialRecord:
    """One run of a bisection's predicate on one commit."""

    seq: int
    phase: str
    """good-end, bad-end, step, culprit, parent or revert."""
    commit: str
    outcome: str
    """pass, fail, skip, error or abort."""
    detail: str = ""
    identity: str | None = None
    """The build key (or source tree id) that was tested."""
    seconds: float = 0.0
    finished: datetime | None = None


@dataclass(frozen=True)
class BisectionRecord:
    id: int
    created: datetime
    updated: datetime
    status: str
    """running, then the report's status (confirmed, unconfirmed, ends-not-reproduced, ...)."""
    request: dict[str, Any]
    report: dict[str, Any] | None = None


class SubtestKey(NamedTuple):
    """One subtest of one cell line at one revision (repeats pooled)."""

    tree: str
    rev: str
    variant: str
    profile: str
    host: str
    job: str
    subtest: str

    @property
    def line(self) -> tuple[str, str, str, str, str, str]:
        """The same test across revisions and runs (what a regression belongs to)."""
        return (self.tree, self.variant, self.profile, self.host, self.job, self.subtest)


class Change(StrEnum):
    """How a subtest's result compares with its baseline (kbisect.pipeline.regressions)."""

    REGRESSION = "REGRESSION"
    FIXED = "FIXED"
    STILL_FAILING = "STILL FAILING"
    NEVER_PASSED = "NEVER PASSED"
    FLAKY = "FLAKY"
    NEW = "NEW"
    INFRA = "INFRA"
    PASS = "PASS"  # noqa: S105 (still passing)
    SKIP = "SKIP"


class ChangeRecord(NamedTuple):
    """How one subtest of a run compares with its baseline.

    A named tuple rather than a frozen dataclass: a browser reads hundreds of thousands of these
    at once, and a tuple is built in a quarter of the time.
    """

    key: SubtestKey
    change: Change
    passes: int
    fails: int
    errors: int
    baseline_run: int | None = None
    baseline_status: str | None = None
    last_pass_run: int | None = None


@dataclass(frozen=True)
class RegressionRecord:
    """A regression's lifecycle: opened by one run, open until a run sees it pass again."""

    id: int
    line: tuple[str, str, str, str, str, str]
    opened_run: int
    opened_rev: str
    good_rev: str | None
    status: str
    fixed_run: int | None = None
    fixed_rev: str | None = None
    bisection_id: int | None = None
