"""Deciding good or bad from repeated, possibly flaky runs.

A bad commit may pass now and then (an intermittent bug), and a good commit may, rarely, fail.
kbisect models both with two rates learned during the bisection: `miss`, the chance that a bad
commit passes, estimated from the runs at commits known to be bad (the bad end, commits decided
bad), and `false_alarm`, the chance that a good commit fails, from the runs at commits known to
be good. Each has a Beta prior, so the first steps are careful and a clean predicate soon needs
few runs.

A step is a sequential probability ratio test: after each run the posterior probability that the
commit is bad is computed from its passes and fails; the step is decided once that probability is
beyond 1 - alpha either way and the run count has reached the floor, or at the ceiling (then
with the confidence it has). This is syzbot's "run it several times" with the number of runs
chosen by the evidence instead of fixed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Beta priors: a bad commit passes about 20% of the time, a good one fails about 0.4% of the time
# (intermittent bugs hide; good kernels rarely fail, and infrastructure trouble is ERROR, not a
# fail), each worth about 5 runs of evidence. bench/bench_bisect.py chose the miss prior: with
# mean 0.1 the first steps, taken before the rate is learned, trusted too few passes.
MISS_PRIOR = (1.0, 4.0)
FALSE_ALARM_PRIOR = (0.02, 4.98)


BAD_END_PRIOR = 0.99
"""The bad end was reported bad: a few passes there are the bug hiding, not a good commit."""


@dataclass(frozen=True)
class Policy:
    """How hard to look. `alpha` is the error a single decision may have."""

    alpha: float = 0.005
    min_runs: int = 1
    """The --repeat floor: runs per step before any decision."""
    max_runs: int = 12
    """Runs per step at most; then the step is decided by the larger posterior."""
    end_runs: int = 3
    """Runs at each end before the bisection starts."""
    validate_runs: int = 3
    """At least this many runs for each validation (culprit, parent, revert)."""
    infra_retries: int = 2
    """Infrastructure errors tolerated at one commit before it is skipped."""
    budget_seconds: float | None = None
    restarts: int = 3
    """How often a contradicted bisection is started again with what it learned."""


@dataclass
class Tally:
    passes: int = 0
    fails: int = 0

    @property
    def runs(self) -> int:
        return self.passes + self.fails

    def add(self, failed: bool) -> None:
        if failed:
            self.fails += 1
        else:
            self.passes += 1


@dataclass
class Rates:
    """What the runs so far say about the predicate's noise."""

    at_bad: Tally
    at_good: Tally

    @classmethod
    def fresh(cls) -> Rates:
        return cls(Tally(), Tally())

    @property
    def miss(self) -> float:
        """P(pass | bad)."""
        a, b = MISS_PRIOR
        return (self.at_bad.passes + a) / (self.at_bad.runs + a + b)

    @property
    def false_alarm(self) -> float:
        """P(fail | good)."""
        a, b = FALSE_ALARM_PRIOR
        return (self.at_good.fails + a) / (self.at_good.runs + a + b)

    def learn(self, tally: Tally, bad: bool) -> None:
        into = self.at_bad if bad else self.at_good
        into.passes += tally.passes
        into.fails += tally.fails


def p_bad(tally: Tally, rates: Rates, prior_bad: float = 0.5) -> float:
    """Posterior probability that the commit is bad, given its passes and fails."""
    miss, alarm = rates.miss, rates.false_alarm
    log_bad = tally.fails * math.log(1 - miss) + tally.passes * math.log(miss)
    log_good = tally.fails * math.log(alarm) + tally.passes * math.log(1 - alarm)
    log_bad += math.log(prior_bad)
    log_good += math.log(1 - prior_bad)
    top = max(log_bad, log_good)
    wb, wg = math.exp(log_bad - top), math.exp(log_good - top)
    return wb / (wb + wg)


@dataclass(frozen=True)
class Decision:
    bad: bool | None
    """True bad, False good, None: run again."""
    confidence: float
    """Posterior probability of the decision (or of the likelier side while undecided)."""


def decide(
    tally: Tally,
    rates: Rates,
    policy: Policy,
    *,
    floor: int | None = None,
    prior_bad: float = 0.5,
) -> Decision:
    """Decide a commit from its runs, or ask for another run. `prior_bad` is what is believed
    before any run: 0.5 for a step; the user's word for the bad end (BAD_END_PRIOR)."""
    pb = p_bad(tally, rates, prior_bad)
    confidence = max(pb, 1 - pb)
    needed = floor if floor is not None else policy.min_runs
    if tally.runs < needed:
        return Decision(None, confidence)
    if pb >= 1 - policy.alpha:
        return Decision(True, pb)
    if pb <= policy.alpha:
        return Decision(False, 1 - pb)
    if tally.runs >= policy.max_runs:
        return Decision(pb >= 0.5, confidence)
    return Decision(None, confidence)
