"""What a bisection step asks: is this commit good or bad? One run of the predicate per call.

- `RunPredicate`: a command in the checked-out (and patched) worktree, with `git bisect run`'s
  contract: exit 0 good, 125 skip, 128 or more abort, anything else bad.
- `BuildPredicate`: the step is bad when the kernel does not build.
- `JobPredicate`: build, deploy, run the job; bad when the named subtest (or any) FAILs.

A patch that does not apply, a build failure (except for BuildPredicate) and an infrastructure
error are never bad: the first two are SKIP, the last is ERROR, which the engine retries before
it becomes a skip.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from kbisect import processes
from kbisect.config import BuildProfile, Job, Project
from kbisect.errors import ExitCode, InfraError, KbisectError
from kbisect.processes import DeadlinePassed, Output
from kbisect.progress import Say
from kbisect.results.model import ResultStatus
from kbisect.tree.checkout import Checkout, checkout, slot
from kbisect.tree.repos import TreeRepo
from kbisect.tree.variants import VariantRef

ABORT_FROM = 128


class TrialOutcome(StrEnum):
    PASS = "pass"  # noqa: S105 (an outcome, not a password)
    FAIL = "fail"
    SKIP = "skip"
    ERROR = "error"
    ABORT = "abort"


@dataclass(frozen=True)
class TrialResult:
    outcome: TrialOutcome
    detail: str = ""
    identity: str | None = None
    """What was tested: the build key, or the source tree id when nothing is built."""


class Predicate(Protocol):
    def describe(self) -> str: ...

    def trial(self, commit: str, revert: Path | None = None) -> TrialResult:
        """Run once on `commit` (with `revert` applied in reverse on top, for validation)."""
        ...


def _with_revert(variant: VariantRef, revert: Path | None) -> VariantRef:
    if revert is None:
        return variant
    return replace(variant, name=f"{variant.name}+revert", patches=(*variant.patches, revert))


class CheckoutPredicate:
    """Shared by the predicates: check the commit (plus variant, plus revert) out into a slot."""

    def __init__(self, project: Project, tree: TreeRepo, variant: VariantRef, say: Say) -> None:
        self.project = project
        self.tree = tree
        self.variant = variant
        self.say = say

    def _checkout(self, commit: str, revert: Path | None, path: Path) -> Checkout | TrialResult:
        co = checkout(self.project, self.tree, commit, _with_revert(self.variant, revert), path)
        if not co.usable:
            return TrialResult(TrialOutcome.SKIP, f"patch does not apply: {co.detail}")
        return co


class RunPredicate(CheckoutPredicate):
    def __init__(
        self,
        project: Project,
        tree: TreeRepo,
        variant: VariantRef,
        command: str,
        timeout: float,
        say: Say,
    ) -> None:
        super().__init__(project, tree, variant, say)
        self.command = command
        self.timeout = timeout

    def describe(self) -> str:
        return f"run {self.command!r}"

    def trial(self, commit: str, revert: Path | None = None) -> TrialResult:
        with slot(self.project, self.tree) as path:
            co = self._checkout(commit, revert, path)
            if isinstance(co, TrialResult):
                return co
            status = _run_command(self.command, path, self.timeout)
        identity = co.tree_id
        if status is None:
            return TrialResult(TrialOutcome.ERROR, f"timed out after {self.timeout:g} s", identity)
        if status == 0:
            return TrialResult(TrialOutcome.PASS, "exit 0", identity)
        if status == ExitCode.SKIP:
            return TrialResult(TrialOutcome.SKIP, f"exit {status}", identity)
        if status >= ABORT_FROM or status < 0:
            return TrialResult(TrialOutcome.ABORT, f"exit {status}", identity)
        return TrialResult(TrialOutcome.FAIL, f"exit {status}", identity)


def _run_command(command: str, cwd: Path, timeout: float) -> int | None:
    """Exit status of a shell command, or None when its deadline passed (it is then killed
    with its whole process group: TERM, then KILL after 5 s). Run under the supervisor, the
    group is ended the same way when kbisect dies, even by SIGKILL."""
    argv = ["/bin/sh", "-c", command]  # the user's own command line, like git bisect run
    try:
        done = processes.run(
            processes.supervised(argv, grace=5), deadline=timeout, cwd=cwd,
            output=Output.INHERIT, check=False, grace=5,
        )  # fmt: skip
    except DeadlinePassed:
        return None
    return done.returncode


class BuildPredicate(CheckoutPredicate):
    """Bad when the kernel does not build (good when it does)."""

    def __init__(
        self,
        project: Project,
        tree: TreeRepo,
        variant: VariantRef,
        profile: BuildProfile,
        say: Say,
        *,
        failure_is: TrialOutcome = TrialOutcome.FAIL,
    ) -> None:
        super().__init__(project, tree, variant, say)
        self.profile = profile
        self.failure_is = failure_is

    def describe(self) -> str:
        return f"build with profile {self.profile.name}"

    def build(self, commit: str, revert: Path | None) -> tuple[TrialResult, object | None]:
        from kbisect.build.builder import build

        with slot(self.project, self.tree) as path:
            co = self._checkout(commit, revert, path)
            if isinstance(co, TrialResult):
                return co, None
            try:
                outcome = build(self.project, co, self.profile)
            except KbisectError as exc:
                return TrialResult(TrialOutcome.ERROR, f"build: {exc}"), None
        if outcome.artifact is None:
            first = outcome.errors[0] if outcome.errors else "build failed"
            return TrialResult(self.failure_is, f"build failed: {first}", outcome.key), None
        return TrialResult(TrialOutcome.PASS, "built", outcome.key), outcome.artifact

    def trial(self, commit: str, revert: Path | None = None) -> TrialResult:
        return self.build(commit, revert)[0]


class JobPredicate:
    """Build (a failure is SKIP), deploy, run the job: bad when the subtest (or any) FAILs."""

    def __init__(
        self,
        builder: BuildPredicate,
        run_cell: Callable[[object], tuple[ResultStatus, dict[str, ResultStatus], str]],
        job: Job,
        test: str | None,
    ) -> None:
        self.builder = builder
        self.run_cell = run_cell
        self.job = job
        self.test = test

    def describe(self) -> str:
        what = f"subtest {self.test}" if self.test else "any subtest"
        return f"job {self.job.name}: bad when {what} FAILs"

    def trial(self, commit: str, revert: Path | None = None) -> TrialResult:
        built, artifact = self.builder.build(commit, revert)
        if artifact is None:
            return built
        try:
            status, subtests, reason = self.run_cell(artifact)
        except InfraError as exc:
            return TrialResult(TrialOutcome.ERROR, str(exc), built.identity)
        key = built.identity
        if self.test is not None:
            got = subtests.get(self.test)
            if got is None:
                if status is ResultStatus.FAIL:  # kernel evidence before the subtest ran
                    return TrialResult(TrialOutcome.FAIL, reason, key)
                return TrialResult(TrialOutcome.ERROR, f"no result for {self.test}: {reason}", key)
            status = got
        return {
            ResultStatus.PASS: TrialResult(TrialOutcome.PASS, reason, key),
            ResultStatus.FAIL: TrialResult(TrialOutcome.FAIL, reason, key),
            ResultStatus.SKIP: TrialResult(TrialOutcome.SKIP, reason, key),
        }.get(status, TrialResult(TrialOutcome.ERROR, reason, key))
