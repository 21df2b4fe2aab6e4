"""The bisection engine with scripted predicates: every outcome is given by a script (a function
of the commit's position and how often it was run), so each case is exact and fast. The history
is kbisect's History without git (positions stand for commits); tests/test_bisect.py runs the
engine on real git repositories."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kbisect.bisect import posterior as post
from kbisect.bisect.engine import Bisector, BisectResult, Status
from kbisect.bisect.gitbisect import History, Mark, read_bisect_log
from kbisect.bisect.predicates import TrialOutcome, TrialResult
from kbisect.bisect.stats import DEFAULT_BUILD_SECONDS, BuildFacts, Policy, TrialCosts
from kbisect.results.model import TrialRecord

Script = Callable[[int, int, bool], TrialOutcome]
"""(position, how many runs there so far, reverted) -> outcome."""


def chain(n: int) -> History:
    return History([f"{i:040x}" for i in range(n)], [[i - 1] if i else [] for i in range(n)], [0])


class Journal:
    def __init__(self, trials: list[TrialRecord] | None = None) -> None:
        self.trials = list(trials or [])
        self.log = ""

    def recorded(self) -> list[TrialRecord]:
        return list(self.trials)

    def add(self, trial: TrialRecord) -> None:
        self.trials.append(trial)

    def bisect_log(self, text: str) -> None:
        self.log = text


@dataclass
class Scripted:
    script: Script
    calls: list[int] = field(default_factory=list)
    clock: list[float] = field(default_factory=lambda: [0.0])
    seconds: float = 1.0

    def describe(self) -> str:
        return "scripted"

    def trial(self, commit: str, revert: Path | None = None) -> TrialResult:
        i = int(commit, 16)
        outcome = self.script(i, self.calls.count(i), revert is not None)
        self.calls.append(i)
        self.clock[0] += self.seconds
        return TrialResult(outcome, f"scripted {outcome}", identity=f"tree-{i}")


def bisect(
    history: History, script: Script, policy: Policy | None = None, journal: Journal | None = None
) -> tuple[BisectResult, Scripted, Journal]:
    pred = Scripted(script)
    journal = journal or Journal()
    result = Bisector(
        history=history, predicate=pred, policy=policy or Policy(), journal=journal,
        make_revert=lambda c: Path("revert"), say=lambda _: None, clock=lambda: pred.clock[0],
    ).run()  # fmt: skip
    return result, pred, journal


def clean(culprit: int, untestable: frozenset[int] = frozenset()) -> Script:
    def script(i: int, _runs: int, reverted: bool) -> TrialOutcome:
        if i in untestable:
            return TrialOutcome.SKIP
        return TrialOutcome.FAIL if i >= culprit and not reverted else TrialOutcome.PASS

    return script


def flaky(culprit: int, miss: float, seed: int) -> Script:
    rng = random.Random(seed)

    def script(i: int, _runs: int, reverted: bool) -> TrialOutcome:
        bad = i >= culprit and not reverted
        return TrialOutcome.FAIL if bad and rng.random() >= miss else TrialOutcome.PASS

    return script


def commit(i: int) -> str:
    return f"{i:040x}"


# -- the outcomes, table-driven -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "n", "script", "status", "culprit"),
    [
        ("middle", 64, clean(40), Status.CONFIRMED, 40),
        ("first commit after good", 64, clean(1), Status.CONFIRMED, 1),
        ("the bad end itself", 64, clean(63), Status.CONFIRMED, 63),
        ("two commits", 2, clean(1), Status.CONFIRMED, 1),
        ("flaky, culprit = bad end (was good == bad)", 48, flaky(47, 0.3, 5), Status.CONFIRMED, 47),
        ("flaky, culprit after good", 48, flaky(1, 0.3, 6), Status.CONFIRMED, 1),
        ("flaky, middle", 200, flaky(77, 0.3, 7), Status.CONFIRMED, 77),
        ("skips around the culprit", 64, clean(30, frozenset({27, 28, 31, 32})),
         Status.CONFIRMED, 30),
    ],
)  # fmt: skip
def test_finds_the_culprit(name: str, n: int, script: Script, status: Status, culprit: int) -> None:
    result, pred, journal = bisect(chain(n), script)
    assert (result.status, result.culprit) == (status, commit(culprit)), result.message
    assert result.confidence >= 0.99
    assert result.runs == len(pred.calls) == len(journal.trials)
    checks = {(v.name, v.ok) for v in result.validations}
    assert checks == {("culprit", True), ("parent", True), ("revert", True)}
    # the log replays to the same answer: its last bad mark is the culprit
    assert f"git bisect bad {commit(culprit)}" == journal.log.splitlines()[-2]


def test_skipped_neighbours_leave_suspects() -> None:
    # the culprit's parent and grandparent cannot be tested: three commits cannot be told apart
    result, _, _ = bisect(chain(64), clean(30, frozenset({28, 29})))
    assert result.status is Status.UNCONFIRMED and result.culprit is None
    assert result.suspects == tuple(commit(i) for i in (28, 29, 30))
    assert "skipped" in result.message


def test_untestable_commit_moves_the_probe_and_is_not_run_again() -> None:
    untestable = frozenset(range(20, 44))  # the whole middle
    result, pred, _ = bisect(chain(64), clean(50, untestable))
    assert result.culprit == commit(50)
    assert all(pred.calls.count(i) == 1 for i in untestable if i in pred.calls)


@pytest.mark.parametrize(
    ("name", "script", "message"),
    [
        ("bad end passes", lambda i, r, rev: TrialOutcome.PASS, "the bad end"),
        ("good end fails", lambda i, r, rev: TrialOutcome.FAIL, "the good end"),
        ("bad end untestable", lambda i, r, rev: TrialOutcome.SKIP if i == 31 else
         TrialOutcome.PASS, "cannot be tested"),
    ],
)  # fmt: skip
def test_ends_that_do_not_reproduce(name: str, script: Script, message: str) -> None:
    result, _, _ = bisect(chain(32), script)
    assert result.status is Status.ENDS_NOT_REPRODUCED
    assert message in result.message
    assert result.exit_code == 4


def test_infra_errors_are_retried_then_the_commit_is_untestable() -> None:
    def script(i: int, runs: int, reverted: bool) -> TrialOutcome:
        if i == 20:
            return TrialOutcome.ERROR  # always
        if i == 30 and runs == 0:
            return TrialOutcome.ERROR  # once
        return clean(25)(i, runs, reverted)

    result, pred, _ = bisect(chain(40), script, Policy(infra_retries=2))
    assert result.culprit == commit(25)
    assert pred.calls.count(20) in (0, 3)  # tried, retried twice, then left alone
    errors = {v.commit: v.errors for v in [*result.ends, *result.steps]}
    assert errors.get(commit(30), 0) <= 1


def test_a_failing_infrastructure_aborts() -> None:
    result, pred, _ = bisect(chain(40), lambda i, r, rev: TrialOutcome.ERROR)
    assert result.status is Status.ABORTED and "infrastructure errors in a row" in result.message
    assert len(pred.calls) == 3 * 3 + 1


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (Policy(run_budget=5), "run budget of 5 runs used up"),
        (Policy(budget_seconds=4.5), "time budget of 4.5 s used up"),
    ],
)
def test_budgets_stop_with_the_likeliest_so_far(policy: Policy, message: str) -> None:
    result, pred, _ = bisect(chain(500), flaky(200, 0.3, 1), policy)
    assert result.status is Status.ABORTED and result.exit_code == 3
    assert message in result.message and "the likeliest so far" in result.message
    assert len(pred.calls) <= 6


def test_abort_stops_at_once() -> None:
    def script(i: int, runs: int, reverted: bool) -> TrialOutcome:
        return TrialOutcome.ABORT if len(calls) == 2 else clean(10)(i, runs, reverted)

    calls: list[int] = []
    pred = Scripted(script, calls)
    result = Bisector(
        history=chain(32), predicate=pred, policy=Policy(), journal=Journal(),
        make_revert=lambda c: None, say=lambda _: None,
    ).run()  # fmt: skip
    assert result.status is Status.ABORTED and "aborted at" in result.message
    assert len(calls) == 3


def test_revert_that_does_not_fix_leaves_it_unconfirmed() -> None:
    def script(i: int, runs: int, reverted: bool) -> TrialOutcome:
        return TrialOutcome.FAIL if i >= 12 else TrialOutcome.PASS  # the revert changes nothing

    result, _, _ = bisect(chain(32), script)
    assert result.culprit == commit(12) and result.status is Status.UNCONFIRMED
    assert [v.ok for v in result.validations if v.name == "revert"] == [False]


def test_repeat_floor_runs_each_commit_tried_that_often() -> None:
    result, _, _ = bisect(chain(32), clean(9), Policy(min_runs=3))
    assert result.culprit == commit(9)
    tried = [v.runs for v in [*result.ends, *result.steps]]
    assert tried and all(runs >= 3 for runs in tried)


def test_resume_replays_the_journal_and_runs_nothing_twice() -> None:
    full, _, full_journal = bisect(chain(100), flaky(61, 0.3, 3))
    # the same bisection cut after 9 runs, then resumed from its journal
    cut = Journal(full_journal.trials[:9])
    resumed, pred, journal = bisect(chain(100), flaky(61, 0.3, 3), journal=cut)
    assert resumed.culprit == full.culprit == commit(61)
    # the predicate was asked only for what was not recorded (its noise continues anew, so the
    # runs after the cut differ from the first bisection's)
    assert len(pred.calls) == resumed.runs - 9 == len(journal.trials) - 9
    assert pred.calls[0] == int(full_journal.trials[9].commit, 16), "it goes on where it was cut"


def test_trace_gives_the_posterior_after_every_run() -> None:
    result, _, _ = bisect(chain(64), clean(40))
    reverts = sum(v.verdict.runs for v in result.validations if v.name == "revert" and v.verdict)
    assert len(result.trace) == result.runs - reverts
    assert [t["run"] for t in result.trace] == list(range(1, len(result.trace) + 1))
    last = result.trace[-1]
    assert last["best"] == commit(40) and last["p_best"] >= 0.99
    assert all(sum(p for _, _, p in t["top"]) <= 1.0001 for t in result.trace)
    assert result.trace[0]["entropy"] > last["entropy"]


def test_cheap_commits_are_preferred() -> None:
    # the same search when every commit costs the same, and when only one is cheap
    history = chain(64)
    cheap = {commit(20)}
    pred = Scripted(clean(40))
    Bisector(
        history=history, predicate=pred, policy=Policy(), journal=Journal(),
        make_revert=lambda c: None, say=lambda _: None,
        cost=lambda c: 0.01 if c in cheap else 1.0,
    ).run()  # fmt: skip
    assert pred.calls[0] == 20, "the cheap commit is worth running first"


def test_trial_costs_learn_what_runs_take() -> None:
    costs = TrialCosts(run_seconds=60, build_seconds=600, boot_seconds=30)
    assert costs("a") == 60 + 600 + 30
    costs.ran("a", 700)
    assert costs("a") == 60, "built, and what the host runs now"
    assert costs("b") == 700 + 30, "a fresh commit costs what the first one took, plus a boot"
    costs.ran("a", 50)
    assert costs("a") == 50


def test_runs_that_happen_to_look_deterministic_do_not_stop_a_flaky_bisection() -> None:
    # a bug that passes half the time at bad commits; with this seed the first runs next to the
    # culprit all pass, so under the deterministic model commit 88 looks sure (0.99 after 12
    # runs). Asked of the intermittent model too, the search goes on to the true culprit.
    draws = random.Random(208277989)

    def script(i: int, _runs: int, reverted: bool) -> TrialOutcome:
        draw = draws.random()  # one draw a run, as bench/bench_bisect.py does
        bad = i >= 82 and not reverted
        return TrialOutcome.PASS if not bad or draw < 0.5 else TrialOutcome.FAIL

    result, pred, _ = bisect(chain(300), script)
    assert result.culprit == commit(82), pred.calls
    assert result.miss_rate > 0.2, "and it learnt the bug is intermittent"


BUILT_META = {"tree": "linux", "variant": "base", "profile": "dom0", "profile_identity": {"a": 1}}


@pytest.mark.parametrize(
    ("built", "first"),
    [
        ((), 29),  # nothing built: the most informative commit
        ((25,), 25),  # built, and almost as informative: an eighth of the cost
        ((33,), 33),
        ((26, 33), 26),  # both built: the more informative
    ],
)
def test_a_built_revision_is_preferred_when_information_is_near_equal(
    built: tuple[int, ...], first: int
) -> None:
    history = chain(64)
    metas = [{**BUILT_META, "commit": commit(j), "duration_s": 600} for j in built]
    metas.append({**BUILT_META, "commit": "elsewhere", "duration_s": 900, "variant": "other"})
    facts = BuildFacts.of(metas, tree="linux", variant="base", profile="dom0", identity={"a": 1})
    costs = facts.costs(run_seconds=60, boot_seconds=30)
    pred = Scripted(clean(40))
    Bisector(
        history=history, predicate=pred, policy=Policy(), journal=Journal(),
        make_revert=lambda c: None, say=lambda _: None, cost=costs, learn_cost=costs.ran,
    ).run()  # fmt: skip
    assert pred.calls[0] == first


def test_build_facts_come_from_the_store_metas() -> None:
    metas = [
        {**BUILT_META, "commit": "a", "duration_s": 100},
        {**BUILT_META, "commit": "b", "duration_s": 300},
        {**BUILT_META, "commit": "c", "duration_s": 200, "variant": "other"},
        {**BUILT_META, "commit": "d", "duration_s": 50, "profile": "domU"},
        {**BUILT_META, "commit": "e", "profile_identity": {"a": 2}},
    ]
    facts = BuildFacts.of(metas, tree="linux", variant="base", profile="dom0", identity={"a": 1})
    assert facts.built == {"a", "b"}, "another variant, profile or config is not this build"
    assert facts.build_seconds == 200, "the median compile of the profile, any variant"
    costs = facts.costs(run_seconds=60, boot_seconds=30)
    assert costs("a") == 60 + 30
    assert costs("z") == 60 + 200 + 30
    none = BuildFacts.of([], tree="linux", variant="base", profile="dom0", identity={})
    assert none.costs(run_seconds=5, boot_seconds=0)("z") == 5 + DEFAULT_BUILD_SECONDS


def test_merges_are_bisected_through_the_graph() -> None:
    # 0 good; 1 and 2 on two branches from 0; 3 merges them; 4 on top (the bad end)
    history = History([commit(i) for i in range(5)], [[], [0], [0], [1, 2], [3]], [0])
    result, _, journal = bisect(history, lambda i, r, rev: (
        TrialOutcome.FAIL if i >= 3 and not rev else TrialOutcome.PASS))  # fmt: skip
    assert result.culprit == commit(3)
    assert any("merge of 2 parents" in f for f in result.flags)
    good, bad = read_bisect_log_text(journal.log)
    assert bad == commit(3) and set(good) >= {commit(1), commit(2)}


def read_bisect_log_text(text: str, tmp: Path | None = None) -> tuple[list[str], str]:
    path = Path(__file__).parent / ".engine-log.tmp" if tmp is None else tmp
    path.write_text(text)
    try:
        return read_bisect_log(path)
    finally:
        path.unlink()


# -- the posterior ----------------------------------------------------------------------------


def test_posterior_follows_the_evidence() -> None:
    topology = post.Topology([[i - 1] if i else [] for i in range(8)])
    prior = post.prior_weights(8, [0], post.Priors())
    ev = post.Evidence.empty(8)
    for j, failed in [(4, True), (2, False), (3, True)]:
        ev.add(j, failed)
    belief = post.believe(topology, prior, ev, post.Priors())
    assert belief.best == 3
    ev.add(2, False)  # a second pass below says more for a deterministic predicate
    again = post.believe(topology, prior, ev, post.Priors())
    assert again.p[3] > belief.p[3]
    # a pass at a commit that failed: the predicate is flaky, and the miss rate says so
    ev.add(3, False)
    noisy = post.believe(topology, prior, ev, post.Priors())
    assert noisy.miss > again.miss


@settings(max_examples=40, deadline=None)
@given(
    runs=st.lists(
        st.tuples(st.integers(min_value=0, max_value=11), st.booleans()), min_size=1, max_size=30
    ),
    merges=st.booleans(),
)
def test_information_about_one_culprit_is_part_of_the_information(
    runs: list[tuple[int, bool]], merges: bool
) -> None:
    # a run cannot tell more about "is h the culprit" than about which commit is; and the
    # chance that a run fails is the one the information is computed from
    parents = [[i - 1] if i else [] for i in range(12)]
    if merges:
        parents[5], parents[8] = [2], [7, 5]
    topology = post.Topology(parents)
    prior = post.prior_weights(12, [0], post.Priors())
    ev = post.Evidence.empty(12)
    for j, failed in runs:
        ev.add(j, failed)
    belief = post.believe(topology, prior, ev, post.Priors())
    every = list(range(12))
    full = post.information(topology, belief, every)
    about = post.information(topology, belief, every, belief.best)
    for j in every:
        assert 0 <= about[j] <= full[j] + 1e-9
        fail = post.fail_chance(topology, belief, j)
        rates = [
            belief.fail_if_bad[h] if topology.is_bad(j, h) else belief.fail_if_good[h]
            for h, ph in enumerate(belief.p)
            if ph > 1e-15
        ]
        assert min(rates) - 1e-9 <= fail <= max(rates) + 1e-9


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=120),
    culprit_share=st.floats(min_value=0, max_value=1),
    seed=st.integers(min_value=0, max_value=10**6),
)
def test_any_noise_free_bisection_is_right_and_short(
    n: int, culprit_share: float, seed: int
) -> None:
    culprit = 1 + int(culprit_share * (n - 2))
    rng = random.Random(seed)
    untestable = frozenset(
        i for i in range(1, n - 1) if i not in (culprit, culprit - 1) and rng.random() < 0.1
    )
    result, _, _ = bisect(chain(n), clean(culprit, untestable))
    assert result.culprit == commit(culprit), result.message
    assert result.runs <= 2 * (n - 1).bit_length() + 6 + len(untestable)
    verdicts = {v.commit: v.verdict for v in [*result.ends, *result.steps]}
    assert verdicts.get(commit(culprit)) is Mark.BAD
