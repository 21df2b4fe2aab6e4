"""The bisection: confirm the ends, let git choose the steps, decide each step from as many runs
as the evidence needs, then validate the culprit.

Durability comes from one rule: every predicate run is recorded (the journal) the moment it ends,
and the algorithm is a deterministic function of the runs it consumes. Resuming therefore replays
the recorded runs (no predicate is called while recorded runs remain for that commit and phase)
and carries on from the first run that was never recorded. git's own state is scratch, rebuilt
by the replay.

Validation follows OSSTest and KernelCI: the culprit fails again, its parent passes again, and the
bad end with the culprit reverted passes. When validation contradicts the search (the parent
fails: an earlier "good" was a flaky bad commit), the search starts again from what is known now,
keeping every run so far and the noise rates they taught.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from kbisect.bisect.gitbisect import GitBisect, Mark, Next
from kbisect.bisect.predicates import Predicate, TrialOutcome, TrialResult
from kbisect.bisect.stats import BAD_END_PRIOR, Policy, Rates, Tally, decide
from kbisect.errors import ExitCode, InfraError, KbisectError
from kbisect.progress import Say
from kbisect.results.model import TrialRecord


class Status(StrEnum):
    CONFIRMED = "confirmed"
    """Culprit found, and validation agrees."""
    UNCONFIRMED = "unconfirmed"
    """Culprit (or a set of suspects) found, but validation did not confirm it."""
    ENDS_NOT_REPRODUCED = "ends-not-reproduced"
    ABORTED = "aborted"
    """The predicate asked to abort (exit >= 128), or the time budget ran out."""


EXIT_CODES = {
    Status.CONFIRMED: ExitCode.OK,
    Status.UNCONFIRMED: ExitCode.FAILED,
    Status.ABORTED: ExitCode.INFRA,
    Status.ENDS_NOT_REPRODUCED: ExitCode.ENDS_DID_NOT_REPRODUCE,
}


class Journal(Protocol):
    """Where runs are recorded as they end, and replayed from on resume."""

    def recorded(self) -> list[TrialRecord]: ...

    def add(self, trial: TrialRecord) -> None: ...

    def bisect_log(self, text: str) -> None: ...


@dataclass
class StepVerdict:
    commit: str
    phase: str
    verdict: Mark
    passes: int
    fails: int
    skips: int
    errors: int
    confidence: float
    identity: str | None = None
    detail: str = ""

    @property
    def runs(self) -> int:
        return self.passes + self.fails


@dataclass
class Validation:
    name: str
    """culprit, parent or revert."""
    expected: Mark
    verdict: StepVerdict | None
    note: str = ""

    @property
    def ok(self) -> bool | None:
        if self.verdict is None or self.verdict.verdict is Mark.SKIP:
            return None
        return self.verdict.verdict is self.expected


@dataclass
class BisectResult:
    """What a bisection found (rendered by kbisect.bisect.report). `confidence` is the product
    of the decisions' posteriors along the path (ends and steps)."""

    status: Status
    message: str
    culprit: str | None = None
    suspects: tuple[str, ...] = ()
    ends: list[StepVerdict] = field(default_factory=list)
    steps: list[StepVerdict] = field(default_factory=list)
    validations: list[Validation] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    confidence: float = 0.0
    restarts: int = 0
    runs: int = 0
    predicate_seconds: float = 0.0
    miss_rate: float = 0.0
    false_alarm_rate: float = 0.0

    @property
    def exit_code(self) -> ExitCode:
        return EXIT_CODES[self.status]


class Stop(Exception):
    """Ends the bisection early (abort or budget), with the reason."""


class Bisector:
    def __init__(
        self,
        *,
        git: GitBisect,
        good: list[str],
        bad: str,
        predicate: Predicate,
        policy: Policy,
        journal: Journal,
        parents: Callable[[str], list[str]],
        make_revert: Callable[[str], Path | None],
        is_ancestor: Callable[[str, str], bool] | None = None,
        say: Say = print,
    ) -> None:
        self.git = git
        self.good = list(good)
        self.bad = bad
        self.predicate = predicate
        self.policy = policy
        self.journal = journal
        self.parents = parents
        self.make_revert = make_revert
        self.is_ancestor = is_ancestor or git.is_ancestor
        self.say = say
        self.rates = Rates.fresh()
        self._recorded: dict[tuple[str, str], list[TrialRecord]] = {}
        self._seq = 0
        for trial in journal.recorded():
            self._recorded.setdefault((trial.phase, trial.commit), []).append(trial)
            self._seq = max(self._seq, trial.seq)
        self._started = time.monotonic()
        self.runs = 0
        self.predicate_seconds = 0.0

    # -- runs ------------------------------------------------------------------------------

    def _trial(self, phase: str, commit: str, index: int, revert: Path | None) -> TrialRecord:
        """The index-th run of (phase, commit): replayed if recorded, else run and recorded."""
        done = self._recorded.setdefault((phase, commit), [])
        if index < len(done):
            return done[index]
        budget = self.policy.budget_seconds
        if budget is not None and time.monotonic() - self._started > budget:
            raise Stop(f"time budget of {budget:g} s used up")
        began = time.monotonic()
        try:
            result = self.predicate.trial(commit, revert)
        except InfraError as exc:
            result = TrialResult(TrialOutcome.ERROR, str(exc))
        seconds = time.monotonic() - began
        self._seq += 1
        trial = TrialRecord(
            seq=self._seq,
            phase=phase,
            commit=commit,
            outcome=result.outcome.value,
            detail=result.detail,
            identity=result.identity,
            seconds=round(seconds, 3),
            finished=datetime.now(UTC),
        )
        self.journal.add(trial)
        done.append(trial)
        self.runs += 1
        self.predicate_seconds += seconds
        return trial

    def evaluate(
        self,
        phase: str,
        commit: str,
        floor: int,
        revert: Path | None = None,
        prior_bad: float = 0.5,
    ) -> StepVerdict:
        """Run (or replay) until the commit is decided, skipped, or aborted."""
        tally = Tally()
        skips = errors = index = 0
        identity: str | None = None
        detail = ""
        while True:
            decision = decide(tally, self.rates, self.policy, floor=floor, prior_bad=prior_bad)
            if decision.bad is not None:
                verdict = Mark.BAD if decision.bad else Mark.GOOD
                return StepVerdict(
                    commit, phase, verdict, tally.passes, tally.fails, skips, errors,
                    decision.confidence, identity, detail,
                )  # fmt: skip
            trial = self._trial(phase, commit, index, revert)
            index += 1
            identity = trial.identity or identity
            detail = trial.detail
            outcome = TrialOutcome(trial.outcome)
            if outcome is TrialOutcome.ABORT:
                raise Stop(f"the predicate aborted at {commit[:12]}: {trial.detail}")
            if outcome is TrialOutcome.SKIP or (
                outcome is TrialOutcome.ERROR and errors + 1 > self.policy.infra_retries
            ):
                if outcome is TrialOutcome.ERROR:
                    errors += 1
                else:
                    skips += 1
                return StepVerdict(
                    commit, phase, Mark.SKIP, tally.passes, tally.fails, skips, errors,
                    decision.confidence, identity, trial.detail,
                )  # fmt: skip
            if outcome is TrialOutcome.ERROR:
                errors += 1
                continue
            tally.add(outcome is TrialOutcome.FAIL)

    def _learn(self, verdict: StepVerdict) -> None:
        if verdict.verdict is not Mark.SKIP:
            self.rates.learn(Tally(verdict.passes, verdict.fails), verdict.verdict is Mark.BAD)

    # -- the bisection ---------------------------------------------------------------------

    def run(self) -> BisectResult:
        result = BisectResult(Status.UNCONFIRMED, "")
        try:
            self._run(result)
        except Stop as stop:
            result.status = Status.ABORTED
            result.message = str(stop)
        except KbisectError as exc:  # git refused the marks: report, never lose the runs so far
            result.status = Status.ABORTED
            result.message = f"git bisect failed: {exc}"
        result.runs = self.runs
        result.predicate_seconds = round(self.predicate_seconds, 1)
        result.miss_rate = round(self.rates.miss, 4)
        result.false_alarm_rate = round(self.rates.false_alarm, 4)
        confidence = 1.0
        for verdict in [*result.ends, *result.steps]:
            if verdict.verdict is not Mark.SKIP:
                confidence *= verdict.confidence
        result.confidence = round(confidence, 4)
        if result.status is Status.CONFIRMED and result.confidence < 0.95:
            result.flags.append(f"low confidence ({result.confidence:.2f})")
        return result

    def _run(self, result: BisectResult) -> None:
        if not self._ends_reproduce(result):
            return
        for attempt in range(self.policy.restarts + 1):
            result.restarts = attempt
            result.steps = []
            nxt = self.git.start(self.good, self.bad)
            self.journal.bisect_log(self.git.log())
            while not nxt.done:
                assert nxt.candidate is not None
                verdict = self.evaluate("step", nxt.candidate, self.policy.min_runs)
                self._learn(verdict)
                result.steps.append(verdict)
                self.say(_step_line(len(result.steps), verdict, nxt))
                nxt = self.git.mark(nxt.candidate, verdict.verdict)
                self.journal.bisect_log(self.git.log())
            if nxt.culprit is None:
                result.suspects = nxt.suspects
                result.status = Status.UNCONFIRMED
                result.message = (
                    f"the first bad commit is one of {len(nxt.suspects)} commits that could "
                    "not be tested (skipped)"
                )
                return
            result.culprit = nxt.culprit
            restart = self._validate(result, nxt.culprit)
            if restart is None:
                return
            self.say(f"validation contradicts the search: {restart}; starting again")
        result.status = Status.UNCONFIRMED
        result.message = f"still contradicted after {self.policy.restarts} restarts"

    def _ends_reproduce(self, result: BisectResult) -> bool:
        floor = self.policy.end_runs
        problems = []
        for commit in self.good:
            v = self.evaluate("good-end", commit, floor)
            self._learn(v)
            result.ends.append(v)
            self.say(_end_line("good", v))
            if v.verdict is not Mark.GOOD:
                problems.append(f"the good end {commit[:12]} is {v.verdict} ({v.detail})")
        v = self.evaluate("bad-end", self.bad, floor, prior_bad=BAD_END_PRIOR)
        self._learn(v)
        result.ends.append(v)
        self.say(_end_line("bad", v))
        if v.verdict is not Mark.BAD:
            problems.append(f"the bad end {self.bad[:12]} is {v.verdict} ({v.detail})")
        if problems:
            result.status = Status.ENDS_NOT_REPRODUCED
            result.message = "; ".join(problems)
            return False
        return True

    def _validate(self, result: BisectResult, culprit: str) -> str | None:
        """Validate the culprit; returns why to restart, or None when done."""
        floor = max(self.policy.validate_runs, self.policy.min_runs)
        result.validations = []
        culprit_v = self.evaluate("culprit", culprit, floor)
        self._learn(culprit_v)
        result.validations.append(Validation("culprit", Mark.BAD, culprit_v))
        self.say(_end_line("culprit", culprit_v))
        parents = self.parents(culprit)
        if len(parents) > 1:
            result.flags.append(f"the culprit is a merge of {len(parents)} parents")
        parent_ok = True
        for parent in parents:
            pv = self.evaluate("parent", parent, floor)
            self._learn(pv)
            result.validations.append(Validation("parent", Mark.GOOD, pv))
            self.say(_end_line("parent", pv))
            if pv.verdict is Mark.BAD:
                self.bad = parent
                # a good mark at or above the new bad end was a flaky validation: forget it
                kept = [g for g in self.good if g != parent and self.is_ancestor(g, parent)]
                self.good = kept or self.good[:1]
                return f"the culprit's parent {parent[:12]} fails"
            parent_ok = parent_ok and pv.verdict is Mark.GOOD
            if pv.identity and culprit_v.identity and pv.identity == culprit_v.identity:
                result.flags.append(
                    f"the culprit builds the same as its parent ({pv.identity[:12]}): "
                    "the change cannot have mattered"
                )
        if culprit_v.verdict is Mark.GOOD:
            self.good.append(culprit)
            return f"the culprit {culprit[:12]} passes"
        revert_ok: bool | None = None
        if len(parents) == 1:
            patch = self.make_revert(culprit)
            if patch is None:
                result.validations.append(Validation("revert", Mark.GOOD, None, "no revert patch"))
            else:
                rv = self.evaluate("revert", self.bad, floor, revert=patch)
                skipped = rv.verdict is Mark.SKIP
                note = f"revert does not apply: {rv.detail}" if skipped else ""
                result.validations.append(Validation("revert", Mark.GOOD, rv, note))
                self.say(_end_line("revert", rv))
                revert_ok = None if skipped else rv.verdict is Mark.GOOD
        confirmed = culprit_v.verdict is Mark.BAD and parent_ok and revert_ok is not False
        result.status = Status.CONFIRMED if confirmed else Status.UNCONFIRMED
        result.message = (
            f"{culprit[:12]} is the first bad commit"
            if confirmed
            else f"{culprit[:12]} is the first bad commit, but validation did not confirm it"
        )
        return None


def _step_line(number: int, v: StepVerdict, nxt: Next) -> str:
    runs = f"{v.runs} run{'s' if v.runs != 1 else ''}"
    extra = f", {v.errors} infra errors" if v.errors else ""
    why = f"\n  {v.detail[:160]}" if v.verdict is not Mark.GOOD and v.detail else ""
    return (
        f"step {number}: {v.commit[:12]} {v.verdict.upper()} ({runs}: {v.passes} pass, "
        f"{v.fails} fail{extra}; confidence {v.confidence:.3f}) {nxt.remaining}"
    ).rstrip() + why


def _end_line(what: str, v: StepVerdict) -> str:
    return (
        f"{what}: {v.commit[:12]} {v.verdict.upper()} ({v.passes} pass, {v.fails} fail, "
        f"{v.skips} skip, {v.errors} error; confidence {v.confidence:.3f})"
    )
