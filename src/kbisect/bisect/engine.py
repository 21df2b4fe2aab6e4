"""The bisection: one posterior over the first bad commit (kbisect.bisect.posterior), the next
run chosen by the information it is expected to give per second it costs, until the posterior is
sure enough; then the bad end with the culprit reverted is run as a check.

There are no phases with fixed run counts: the ends are commits like the others (they are run
when the posterior wants to know about them, for instance when the culprit is next to one), and
validating the culprit and its parent is what the stopping rule already asks. An untestable
commit (exit 125, a patch that does not apply, a build failure, infrastructure errors past the
retries) is an observation: the next run goes to its most informative neighbour.

Durability comes from one rule: every predicate run is recorded (the journal) the moment it ends,
and the search is a deterministic function of the runs it consumes. Resuming therefore replays
the recorded runs (a recorded run at the commit asked for is taken instead of a new one) and
carries on from the first run that was never recorded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from kbisect.bisect import posterior as post
from kbisect.bisect.gitbisect import History, LogMark, Mark, render_log
from kbisect.bisect.predicates import Predicate, TrialOutcome, TrialResult
from kbisect.bisect.stats import Policy
from kbisect.errors import ExitCode, InfraError
from kbisect.progress import Say
from kbisect.results.model import TrialRecord

DAG_CANDIDATES = 160
"""In a history with merges, at most about this many commits are weighed for the next run."""
TOP = 8
"""Hypotheses kept per run in the trace (the posterior's plot data)."""


class Status(StrEnum):
    CONFIRMED = "confirmed"
    """Culprit found, and the revert check agrees (or could not be run)."""
    UNCONFIRMED = "unconfirmed"
    """Culprit found but the revert check contradicts it, or only a set of suspects."""
    ENDS_NOT_REPRODUCED = "ends-not-reproduced"
    ABORTED = "aborted"
    """The predicate asked to abort (exit >= 128), or a budget ran out."""


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
    """What is known about one commit: its runs, and the posterior's verdict on it."""

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
    """What a bisection found (rendered by kbisect.bisect.report). `confidence` is the
    posterior probability of the culprit (or of the suspects together)."""

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
    """Always 0: nothing is ever started again (kept for reports of older versions)."""
    runs: int = 0
    predicate_seconds: float = 0.0
    miss_rate: float = 0.0
    false_alarm_rate: float = 0.0
    trace: list[dict[str, Any]] = field(default_factory=list)
    """After every run: the commit, its outcome, the likeliest culprit and the posterior's top."""
    commits: int = 0
    """The positions the posterior is over (the ends included)."""

    @property
    def exit_code(self) -> ExitCode:
        return EXIT_CODES[self.status]


class Stop(Exception):
    """Ends the bisection early (abort or budget), with the reason."""


class Bisector:
    def __init__(
        self,
        *,
        history: History,
        predicate: Predicate,
        policy: Policy,
        journal: Journal,
        make_revert: Callable[[str], Path | None],
        cost: Callable[[str], float] | None = None,
        learn_cost: Callable[[str, float], None] | None = None,
        priors: post.Priors | None = None,
        say: Say = print,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.history = history
        self.predicate = predicate
        self.policy = policy
        self.journal = journal
        self.make_revert = make_revert
        self.cost = cost or (lambda _: 1.0)
        self.learn_cost = learn_cost or (lambda _c, _s: None)
        self.priors = priors or (post.DETERMINISTIC if policy.deterministic else post.Priors())
        self.say = say
        self.clock = clock
        size = len(history.commits)
        self.topology = post.Topology(history.parents)
        self.prior = post.prior_weights(size, history.goods, self.priors)
        self.evidence = post.Evidence.empty(size)
        self.errors = [0] * size
        self.skips = [0] * size
        self.identity: dict[int, str] = {}
        self.detail: dict[int, str] = {}
        self.first_run: list[int] = []
        self._streak = 0
        self._last: int | None = None
        self._queued: dict[tuple[str, str], list[TrialRecord]] = {}
        self._seq = 0
        for trial in journal.recorded():
            kind = "revert" if trial.phase == "revert" else "probe"
            self._queued.setdefault((kind, trial.commit), []).append(trial)
            self._seq = max(self._seq, trial.seq)
        self._started = clock()
        self.runs = 0
        self.predicate_seconds = 0.0
        self.belief = self._believe()
        self.trace: list[dict[str, Any]] = []
        self._last_bits = 1.0

    # -- runs ----------------------------------------------------------------------------------

    def _trial(self, phase: str, commit: str, revert: Path | None) -> TrialRecord:
        """A run at `commit`: replayed if one is recorded there, else run and recorded."""
        queued = self._queued.get(("revert" if revert else "probe", commit))
        if queued:
            trial = queued.pop(0)
        else:
            if self.runs >= self.policy.run_budget:
                raise Stop(f"run budget of {self.policy.run_budget} runs used up")
            budget = self.policy.budget_seconds
            if budget is not None and self.clock() - self._started > budget:
                raise Stop(f"time budget of {budget:g} s used up")
            began = self.clock()
            try:
                result = self.predicate.trial(commit, revert)
            except InfraError as exc:
                result = TrialResult(TrialOutcome.ERROR, str(exc))
            self._seq += 1
            trial = TrialRecord(
                seq=self._seq,
                phase=phase,
                commit=commit,
                outcome=result.outcome.value,
                detail=result.detail,
                identity=result.identity,
                seconds=round(self.clock() - began, 3),
                finished=datetime.now(UTC),
            )
            self.journal.add(trial)
        self.runs += 1
        self.predicate_seconds += trial.seconds
        self.learn_cost(commit, trial.seconds)
        return trial

    def _phase(self, j: int) -> str:
        if j in self.history.goods:
            return "good-end"
        return "bad-end" if j == self.history.bad else "step"

    def _run_at(self, j: int) -> None:
        commit = self.history.commits[j]
        if j not in self.first_run:
            self.first_run.append(j)
        self._last = j
        trial = self._trial(self._phase(j), commit, None)
        outcome = TrialOutcome(trial.outcome)
        if trial.identity:
            self.identity[j] = trial.identity
        self.detail[j] = trial.detail
        if outcome is TrialOutcome.ABORT:
            raise Stop(f"the predicate aborted at {commit[:12]}: {trial.detail}")
        self._streak = self._streak + 1 if outcome is TrialOutcome.ERROR else 0
        if outcome is TrialOutcome.ERROR:
            self.errors[j] += 1
            if self.errors[j] > self.policy.infra_retries:
                self.evidence.untestable.add(j)
            if self._streak > 3 * (self.policy.infra_retries + 1):
                raise Stop(f"{self._streak} infrastructure errors in a row: {trial.detail}")
        elif outcome is TrialOutcome.SKIP:
            self.skips[j] += 1
            self.evidence.untestable.add(j)
        else:
            self.evidence.add(j, outcome is TrialOutcome.FAIL)
        self.belief = self._believe()
        self._record(j, outcome)

    def _believe(self) -> post.Belief:
        return post.believe(self.topology, self.prior, self.evidence, self.priors)

    # -- the search ----------------------------------------------------------------------------

    def run(self) -> BisectResult:
        result = BisectResult(Status.UNCONFIRMED, "", commits=len(self.history.commits))
        try:
            self._search(result)
        except Stop as stop:
            best = self.belief.best
            result.status = Status.ABORTED
            result.message = f"{stop}; the likeliest so far: {self._name(best)} " + (
                f"(probability {self.belief.p[best]:.3f})"
            )
        self._summarise(result)
        return result

    def _search(self, result: BisectResult) -> None:
        ends = [*self.history.goods, self.history.bad]
        for j in ends:
            while self.evidence.runs(j) < self.policy.end_runs and self._testable(j):
                self._run_at(j)
        while True:
            if any(not self._testable(j) for j in ends):
                return self._untestable_end(result)
            last = self._last
            if last is not None and self._testable(last) and self._below_floor(last):
                self._run_at(last)  # the --repeat floor comes first
                continue
            best = self.belief.best
            steer = None
            if self.belief.p[best] >= self.policy.confidence:
                steer = self._least_sure(best)
                if steer.p[best] >= self.policy.confidence:
                    return self._found(result, best)
            group = post.suspects(self.topology, self.belief, self._testables())
            mass = sum(self.belief.p[h] for h in group)
            if len(group) > 1 and mass >= self.policy.confidence:
                return self._suspects(result, group, mass)
            nxt = self._finishing(best, steer or self.belief)
            if nxt is None:
                return self._suspects(result, group, mass)
            self._run_at(nxt)

    def _finishing(self, h: int, steer: post.Belief) -> int | None:
        """The run likeliest to make h sure (per second of cost), among the few that tell `steer`
        most whether h is the culprit; when no single run could, the most informative one
        (`steer` is the posterior, or the noise model least sure of h when the posterior is)."""
        candidates = self._candidates()
        bits = post.information(self.topology, steer, candidates, h)
        ranked = sorted(range(len(candidates)), key=lambda i: -bits[i])[:4]
        near = [h, *self.history.parents[h]] if h < len(self.history.commits) else []
        chosen = {candidates[i] for i in ranked} | {j for j in near if self._worth_running(j)}
        best, score = None, 0.0
        for j in sorted(chosen):
            fail = post.fail_chance(self.topology, self.belief, j)
            finish = sum(
                chance
                for failed, chance in ((True, fail), (False, 1 - fail))
                if chance > 0 and self._would_find(h, j, failed)
            )
            value = finish / self.cost(self.history.commits[j])
            if value > score:
                best, score = j, value
        if best is not None:
            return best
        return self._next(steer, h) if steer is not self.belief else self._next(steer, None)

    def _would_find(self, h: int, j: int, failed: bool) -> bool:
        """Whether h would be sure after one more run at j with this outcome."""
        tally = self.evidence.fails if failed else self.evidence.passes
        tally[j] += 1
        try:
            conf = self.policy.confidence
            return self._believe().p[h] >= conf and self._least_sure(h).p[h] >= conf
        finally:
            tally[j] -= 1

    def _least_sure(self, h: int) -> post.Belief:
        """The posterior of the noise model least sure of h among those the runs have not
        ruled out: h is found when it is sure, and until then the runs go where it learns most."""
        ruled_out = 1 - self.policy.confidence
        return post.worst_case(self.topology, self.prior, self.evidence, self.priors, h, ruled_out)

    def _testable(self, j: int) -> bool:
        return j not in self.evidence.untestable

    def _testables(self) -> list[int]:
        return [j for j in range(len(self.history.commits)) if self._testable(j)]

    def _worth_running(self, j: int) -> bool:
        return self._testable(j) and not (self.policy.deterministic and self.evidence.runs(j))

    def _next(self, belief: post.Belief, about: int | None) -> int | None:
        """The commit to run next: the most information per second of cost (about whether
        `about` is the culprit, when it is the one left to make sure)."""
        candidates = self._candidates()
        bits = post.information(self.topology, belief, candidates, about)
        best, score = None, 0.0
        self._last_bits = max(bits, default=0.0)
        testable = self._testable_chance()
        for j, info in zip(candidates, bits, strict=True):
            value = info * (1.0 if j in self.first_run else testable)
            value /= self.cost(self.history.commits[j])
            if info > 1e-9 and value > score:
                best, score = j, value
        return best

    def _testable_chance(self) -> float:
        """The chance that a commit never run can be tested: a run there that turns out
        untestable teaches nothing. From the share of the commits tried that were untestable,
        with a prior that every commit is testable until one is not (a Beta(0, 1))."""
        untestable = sum(1 for j in self.first_run if not self._testable(j))
        return 1 - untestable / (len(self.first_run) + 1)

    def _below_floor(self, j: int) -> bool:
        return 0 < self.evidence.runs(j) < self.policy.min_runs

    def _candidates(self) -> list[int]:
        testable = [j for j in range(len(self.history.commits)) if self._worth_running(j)]
        if self.topology.linear or len(testable) <= DAG_CANDIDATES:
            return testable
        # a history with merges: weigh an even spread, and the commits at the likeliest
        # hypotheses and their parents
        step = len(testable) / DAG_CANDIDATES
        chosen = {testable[int(i * step)] for i in range(DAG_CANDIDATES)}
        ranked = sorted(range(len(self.belief.p) - 1), key=lambda h: -self.belief.p[h])
        for h in ranked[:20]:
            chosen.update(x for x in [h, *self.history.parents[h]] if self._worth_running(x))
        return sorted(chosen)

    # -- the outcomes --------------------------------------------------------------------------

    def _name(self, h: int) -> str:
        if h >= len(self.history.commits):
            return "none (the bad end is good)"
        return self.history.commits[h][:12]

    def _untestable_end(self, result: BisectResult) -> None:
        ends = [*self.history.goods, self.history.bad]
        j = next(j for j in ends if not self._testable(j))
        which = "bad" if j == self.history.bad else "good"
        result.status = Status.ENDS_NOT_REPRODUCED
        result.message = (
            f"the {which} end {self.history.commits[j][:12]} cannot be tested "
            f"({self.detail.get(j, '')})"
        )

    def _found(self, result: BisectResult, h: int) -> None:
        p = self.belief.p[h]
        result.confidence = round(p, 4)
        if h == len(self.history.commits):
            result.status = Status.ENDS_NOT_REPRODUCED
            bad = self.history.commits[self.history.bad][:12]
            result.message = f"the bad end {bad} is good (probability {p:.3f})"
            return
        if h in self.history.goods:
            result.status = Status.ENDS_NOT_REPRODUCED
            result.message = f"the good end {self._name(h)} is bad (probability {p:.3f})"
            return
        culprit = self.history.commits[h]
        result.culprit = culprit
        result.validations = [Validation("culprit", Mark.BAD, self._verdict(h))]
        parents = self.history.parents[h]
        for parent in parents:
            result.validations.append(Validation("parent", Mark.GOOD, self._verdict(parent)))
            same = self.identity.get(parent)
            if same and same == self.identity.get(h):
                result.flags.append(
                    f"the culprit builds the same as its parent ({same[:12]}): "
                    "the change cannot have mattered"
                )
        if len(parents) > 1:
            result.flags.append(f"the culprit is a merge of {len(parents)} parents")
            revert_ok = None
        else:
            revert_ok = self._check_revert(result, culprit)
        confirmed = revert_ok is not False
        result.status = Status.CONFIRMED if confirmed else Status.UNCONFIRMED
        result.message = f"{culprit[:12]} is the first bad commit (probability {p:.3f})"
        if not confirmed:
            result.message += ", but the bad end with it reverted still fails"

    def _check_revert(self, result: BisectResult, culprit: str) -> bool | None:
        """Run the bad end with the culprit reverted until it is sure to pass (or to fail)."""
        patch = self.make_revert(culprit)
        if patch is None:
            result.validations.append(Validation("revert", Mark.GOOD, None, "no revert patch"))
            return None
        bad = self.history.commits[self.history.bad]
        tally = post.Evidence.empty(1)
        fixed = 0.9  # the culprit is known: its revert is expected to fix the bad end
        miss, alarm = max(self.belief.miss, 1e-3), max(self.belief.false_alarm, 1e-3)
        skipped = ""
        while abs(fixed - 0.5) < self.policy.confidence - 0.5:
            if tally.runs(0) >= (1 if self.policy.deterministic else self.policy.revert_runs):
                break
            trial = self._trial("revert", bad, patch)
            outcome = TrialOutcome(trial.outcome)
            if outcome in (TrialOutcome.SKIP, TrialOutcome.ABORT, TrialOutcome.ERROR):
                skipped = trial.detail
                break
            failed = outcome is TrialOutcome.FAIL
            tally.add(0, failed)
            on_fixed = alarm if failed else 1 - alarm
            on_broken = 1 - miss if failed else miss
            fixed = fixed * on_fixed / (fixed * on_fixed + (1 - fixed) * on_broken)
        verdict = Mark.SKIP if skipped else Mark.GOOD if fixed >= 0.5 else Mark.BAD
        step = StepVerdict(
            bad, "revert", verdict, tally.passes[0], tally.fails[0], int(bool(skipped)), 0,
            max(fixed, 1 - fixed), detail=skipped,
        )  # fmt: skip
        note = f"revert does not apply: {skipped}" if skipped else ""
        result.validations.append(Validation("revert", Mark.GOOD, step, note))
        self.say(
            f"revert check: {bad[:12]} without {culprit[:12]}: {tally.passes[0]} pass, "
            f"{tally.fails[0]} fail: {verdict.upper()}"
        )
        return None if skipped else verdict is Mark.GOOD

    def _suspects(self, result: BisectResult, group: list[int], mass: float) -> None:
        size = len(self.history.commits)
        result.suspects = tuple(self.history.commits[h] for h in sorted(group) if h < size)
        result.status = Status.UNCONFIRMED
        result.confidence = round(mass, 4)
        result.message = (
            f"the first bad commit is one of {len(result.suspects)} commits that could not be "
            f"told apart: the commits between them could not be tested (skipped) "
            f"(probability {mass:.3f})"
        )

    # -- what is reported ----------------------------------------------------------------------

    def _verdict(self, j: int) -> StepVerdict:
        p_bad = self.topology.bad_mass(self.belief.p, [j])[0]
        if not self._testable(j) and self.evidence.runs(j) == 0:
            verdict, confidence = Mark.SKIP, 0.0
        else:
            verdict = Mark.BAD if p_bad >= 0.5 else Mark.GOOD
            confidence = max(p_bad, 1 - p_bad)
        return StepVerdict(
            self.history.commits[j], self._phase(j), verdict, self.evidence.passes[j],
            self.evidence.fails[j], self.skips[j], self.errors[j], confidence,
            self.identity.get(j), self.detail.get(j, ""),
        )  # fmt: skip

    def _record(self, j: int, outcome: TrialOutcome) -> None:
        """The trace entry, the progress line and the bisect log after a run at j."""
        belief = self.belief
        best = belief.best
        ranked = sorted(range(len(belief.p)), key=lambda h: -belief.p[h])[:TOP]
        size = len(self.history.commits)
        commits = self.history.commits
        self.trace.append(
            {
                "run": self.runs,
                "position": j,
                "commit": commits[j],
                "outcome": outcome.value,
                "best": commits[best] if best < size else None,
                "best_position": best,
                "p_best": round(belief.p[best], 4),
                "entropy": round(belief.entropy(), 3),
                "top": [
                    [h, commits[h] if h < size else None, round(belief.p[h], 4)]
                    for h in ranked
                    if belief.p[h] >= 0.001
                ],
            }
        )
        self.say(self._progress(j, outcome))
        self.journal.bisect_log(self.log_text())

    def _progress(self, j: int, outcome: TrialOutcome) -> str:
        belief = self.belief
        best = belief.best
        left = post.runs_left(belief, self.policy.confidence, self._last_bits)
        seconds = self.predicate_seconds / max(self.runs, 1)
        commit = self.history.commits[j][:12]
        detail = self.detail.get(j, "")
        why = f"\n  {detail[:160]}" if outcome is not TrialOutcome.PASS and detail else ""
        return (
            f"run {self.runs}: {commit} {outcome.value.upper()}; likeliest first bad commit "
            f"{self._name(best)} (probability {belief.p[best]:.3f}); about "
            f"{math.ceil(left)} runs ({left * seconds / 60:.1f} min) left{why}"
        )

    def log_text(self) -> str:
        """The bisect log: what the posterior is sure of, in git's form."""
        commits = self.history.commits
        testable = [j for j in self.first_run if self.evidence.runs(j)]
        p_bad = dict(zip(testable, self.topology.bad_mass(self.belief.p, testable), strict=True))
        conf = self.policy.confidence
        bads = sorted((j for j in testable if p_bad[j] >= conf), reverse=True)
        lowest = bads[-1] if bads else self.history.bad
        bads = [j for j in bads if self.topology.is_bad(j, lowest)]
        marks = [
            LogMark(commits[j], Mark.GOOD, self._note(j))
            for j in testable
            if p_bad[j] <= 1 - conf and self.topology.is_bad(lowest, j)
        ]
        marks += [LogMark(commits[j], Mark.SKIP) for j in self.first_run if not self._testable(j)]
        marks += [LogMark(commits[j], Mark.BAD, self._note(j)) for j in bads]
        best = self.belief.best
        found = (
            self.belief.p[best] >= conf and best < len(commits) and best not in self.history.goods
        )
        good = [commits[g] for g in self.history.goods]
        return render_log(good, commits[self.history.bad], marks, commits[best] if found else None)

    def _note(self, j: int) -> str:
        return f"{self.evidence.passes[j]} pass, {self.evidence.fails[j]} fail"

    def _summarise(self, result: BisectResult) -> None:
        result.runs = self.runs
        result.predicate_seconds = round(self.predicate_seconds, 1)
        result.miss_rate = round(self.belief.miss, 4)
        result.false_alarm_rate = round(self.belief.false_alarm, 4)
        result.trace = self.trace
        ends = {*self.history.goods, self.history.bad}
        for j in self.first_run:
            (result.ends if j in ends else result.steps).append(self._verdict(j))
