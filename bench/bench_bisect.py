"""Bisection engine benchmarks. Prints figures with their targets; asserts nothing.

python3 bench/bench_bisect.py [--accuracy-k 8] [--count 200] [--seed 1] [--jobs 2]
                              [--parts steps,accuracy,overhead] [--tune [--tune-variants 0,6]]

Everything runs on synthetic linear histories made with real git (`git fast-import`, one small
file changed per commit) in a temporary directory, with git's own bisection (kbisect's
GitBisect) and an in-process predicate, so the figures are the engine's and git's alone; no
kbisect cache is needed.

1. steps and predicate runs against ceil(log2 N), deterministic predicate, N = 64, 256, 1024;
2. accuracy over --count bisections per setting with a flaky predicate (a bad commit passes with
   probability 0%, 10%, 30%; good commits always pass), with 10% of the commits unbuildable
   (SKIP; never the culprit or an end) and with the culprit's neighbours unbuildable too. The
   predicate understands a revert: the bad end with commit X reverted is good iff X is the true
   culprit (make_revert writes a file naming X). Every decision is compared with the truth, so
   the wrong bisections are explained by their first wrong decision;
3. kbisect's own time per step outside the predicate on a 1,000-commit history.

A real git bisection costs about 0.4-0.9 s here (git runs 2-3 processes per step), so part 2
defaults to N = 256 (k = 8): 5 settings x 200 bisections take about 3 minutes on 2 idle cores;
at k = 10 they take about a quarter longer (two more steps each).

--tune (part 4) repeats the 0%, 10% and 30% settings under other policies, priors
(stats.MISS_PRIOR and FALSE_ALARM_PRIOR replaced in this process only), a Beta-binomial
stats.p_bad, and two emulated engine changes; nothing under src/ is changed. Culprit positions,
noise and unbuildable commits are seeded, so a run is repeatable.
"""

from __future__ import annotations

import argparse
import functools
import math
import multiprocessing
import os
import random
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kbisect.bisect import stats
from kbisect.bisect.engine import Bisector, BisectResult, Status, StepVerdict
from kbisect.bisect.gitbisect import GitBisect, Next
from kbisect.bisect.predicates import TrialOutcome, TrialResult
from kbisect.bisect.stats import Policy
from kbisect.errors import KbisectError
from kbisect.results.model import TrialRecord

EPOCH = 1_700_000_000
FILES = 16
"""The history cycles through this many small files (one changed per commit)."""

Prior = tuple[float, float]


# -- synthetic history -------------------------------------------------------------------------


def make_history(path: Path, n: int) -> list[str]:
    """A bare repository at `path` with a linear history of n commits, each changing one small
    file, written by a single `git fast-import`; returns the commit ids, oldest first (the same
    ids on every run: names and dates are fixed)."""
    subprocess.run(["git", "init", "-q", "--bare", str(path)], check=True)
    chunks = []
    for i in range(n):
        message = f"change {i}\n"
        blob = f"line {i}\n"
        chunks.append(
            f"commit refs/heads/main\nmark :{i + 1}\n"
            f"committer Bench <bench@example.org> {EPOCH + 60 * i} +0000\n"
            f"data {len(message)}\n{message}"
        )
        if i:
            chunks.append(f"from :{i}\n")
        chunks.append(f"M 100644 inline file{i % FILES}.txt\ndata {len(blob)}\n{blob}\n")
    marks = path / "marks"
    subprocess.run(
        ["git", "-C", str(path), "fast-import", "--quiet", f"--export-marks={marks}"],
        input="".join(chunks).encode(),
        check=True,
    )
    return list(history(str(path)))


@functools.cache
def history(repo: str) -> tuple[str, ...]:
    """The commit ids of a history made by make_history (read back from its marks file)."""
    by_mark = {}
    for line in (Path(repo) / "marks").read_text().splitlines():
        mark, sha = line.split()
        by_mark[int(mark[1:])] = sha
    return tuple(by_mark[m] for m in sorted(by_mark))


@functools.cache
def positions(repo: str) -> dict[str, int]:
    return {sha: i for i, sha in enumerate(history(repo))}


# -- a decision model under trial (--tune) ---------------------------------------------------


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def p_bad_marginal(tally: stats.Tally, rates: stats.Rates, prior_bad: float = 0.5) -> float:
    """stats.p_bad with the noise rates integrated out instead of plugged in: the likelihood of
    the commit's own passes and fails is Beta-binomial under the Beta posterior of each rate
    (prior plus the runs learned so far), so a bad commit's own passes raise the miss rate it is
    judged with, and a fail at a supposedly good commit is not outweighed by a few passes."""
    a, b = stats.MISS_PRIOR
    a, b = a + rates.at_bad.passes, b + rates.at_bad.fails
    log_bad = _log_beta(a + tally.passes, b + tally.fails) - _log_beta(a, b)
    a, b = stats.FALSE_ALARM_PRIOR
    a, b = a + rates.at_good.fails, b + rates.at_good.passes
    log_good = _log_beta(a + tally.fails, b + tally.passes) - _log_beta(a, b)
    log_bad += math.log(prior_bad)
    log_good += math.log(1 - prior_bad)
    top = max(log_bad, log_good)
    wb, wg = math.exp(log_bad - top), math.exp(log_good - top)
    return wb / (wb + wg)


MODELS = {"plug-in": stats.p_bad, "marginal": p_bad_marginal}


# -- the synthetic predicate and the engine's collaborators ------------------------------------


class SyntheticPredicate:
    """Commit i is bad iff i >= culprit; a bad commit passes with probability `miss`; good
    commits always pass; `unbuildable` commits are SKIP. With a revert (a file naming commit X),
    the commit is bad iff it is bad and X is not the culprit."""

    def __init__(
        self,
        shas: Sequence[str],
        index: dict[str, int],
        culprit: int,
        miss: float,
        unbuildable: frozenset[int],
        noise_seed: int,
    ) -> None:
        self.shas = shas
        self.index = index
        self.culprit = culprit
        self.miss = miss
        self.unbuildable = unbuildable
        self.rng = random.Random(noise_seed)

    def describe(self) -> str:
        return f"synthetic: first bad commit {self.culprit}, miss rate {self.miss:.0%}"

    def is_bad(self, i: int, reverted: str | None) -> bool:
        return i >= self.culprit and reverted != self.shas[self.culprit]

    def trial(self, commit: str, revert: Path | None = None) -> TrialResult:
        i = self.index[commit]
        identity = f"tree-{i}"
        if i in self.unbuildable:
            return TrialResult(TrialOutcome.SKIP, "does not build", identity)
        reverted = None
        if revert is not None:
            reverted = revert.read_text().strip()
            if self.index[reverted] > i:
                return TrialResult(TrialOutcome.SKIP, "revert does not apply", identity)
            identity += f"-revert-{reverted[:12]}"
        if self.is_bad(i, reverted) and self.rng.random() >= self.miss:
            return TrialResult(TrialOutcome.FAIL, "exit 1", identity)
        return TrialResult(TrialOutcome.PASS, "exit 0", identity)


class MemoryJournal:
    def __init__(self) -> None:
        self.trials: list[TrialRecord] = []
        self.log = ""

    def recorded(self) -> list[TrialRecord]:
        return list(self.trials)

    def add(self, trial: TrialRecord) -> None:
        self.trials.append(trial)

    def bisect_log(self, text: str) -> None:
        self.log = text


class TimedGitBisect(GitBisect):
    """GitBisect that adds up the wall time spent in git (start, mark, log).

    With `drop_contradicted` (an engine change under trial, --tune), a restart leaves out the
    good commits that are not below the bad end any more (a later verdict found an ancestor of
    theirs bad): positions come from the linear history."""

    seconds = 0.0
    drop_contradicted: dict[str, int] | None = None

    def start(self, good: list[str], bad: str) -> Next:
        if self.drop_contradicted is not None:
            where = self.drop_contradicted
            good = [g for g in good if where[g] < where[bad]]
        began = time.monotonic()
        try:
            return super().start(good, bad)
        finally:
            self.seconds += time.monotonic() - began

    def mark(self, commit: str, term: str) -> Next:
        began = time.monotonic()
        try:
            return super().mark(commit, term)
        finally:
            self.seconds += time.monotonic() - began

    log_seconds = 0.0
    """Of which `git bisect log` (run after every mark, for the journal)."""

    def log(self) -> str:
        began = time.monotonic()
        try:
            return super().log()
        finally:
            self.seconds += time.monotonic() - began
            self.log_seconds += time.monotonic() - began


@dataclass(frozen=True)
class Decided:
    """One decision of the engine, with the truth next to it."""

    phase: str
    position: int
    verdict: str
    truth: str
    passes: int
    fails: int
    miss_estimate: float
    """The engine's miss rate when it decided (what the decision used)."""
    step_number: int
    """1-based among the step decisions so far (all attempts), 0 for ends and validations."""

    @property
    def wrong(self) -> bool:
        return self.verdict in ("good", "bad") and self.verdict != self.truth


class RecordingBisector(Bisector):
    """Bisector that keeps every decision it made (ends, steps, validations, all attempts)."""

    def __init__(
        self, synthetic: SyntheticPredicate, bad_end_prior: float | None = None, **kwargs: Any
    ) -> None:
        super().__init__(predicate=synthetic, **kwargs)
        self.synthetic = synthetic
        self.bad_end_prior = bad_end_prior
        self.decided: list[Decided] = []
        self.step_count = 0

    def evaluate(
        self,
        phase: str,
        commit: str,
        floor: int,
        revert: Path | None = None,
        prior_bad: float = 0.5,
    ) -> StepVerdict:
        if phase == "bad-end" and self.bad_end_prior is not None:
            prior_bad = self.bad_end_prior  # a variant under trial (--tune)
        verdict = super().evaluate(phase, commit, floor, revert, prior_bad)
        i = self.synthetic.index[commit]
        reverted = revert.read_text().strip() if revert is not None else None
        if phase == "step":
            self.step_count += 1
        self.decided.append(
            Decided(
                phase,
                i,
                verdict.verdict,
                "bad" if self.synthetic.is_bad(i, reverted) else "good",
                verdict.passes,
                verdict.fails,
                self.rates.miss,
                self.step_count if phase == "step" else 0,
            )
        )
        return verdict


# -- one bisection (runs in a worker process) --------------------------------------------------


@dataclass(frozen=True)
class Case:
    repo: str
    scratch: str
    culprit: int
    miss: float
    skip_rate: float
    skip_neighbours: bool
    noise_seed: int
    policy: tuple[tuple[str, Any], ...] = ()
    miss_prior: Prior = stats.MISS_PRIOR
    false_alarm_prior: Prior = stats.FALSE_ALARM_PRIOR
    model: str = "plug-in"
    drop_contradicted: bool = False
    bad_end_prior: float | None = None


@dataclass
class Bisection:
    case: Case
    status: str
    message: str
    culprit: int | None
    suspects: tuple[int, ...]
    steps: int
    """Step decisions over all attempts (a restart's steps count again)."""
    step_runs: int
    runs: int
    restarts: int
    wall: float
    predicate_seconds: float
    git_seconds: float
    log_seconds: float
    decided: list[Decided] = field(default_factory=list)

    @property
    def category(self) -> str:
        if self.culprit == self.case.culprit:
            return "exact"
        if self.culprit is None and self.case.culprit in self.suspects:
            return "suspects"
        return "wrong"

    @property
    def first_wrong(self) -> Decided | None:
        return next((d for d in self.decided if d.wrong), None)


def unbuildable(case: Case, n: int) -> frozenset[int]:
    """Commits that do not build: a seeded `skip_rate` of them (never an end or the culprit),
    plus the culprit's parent and child with skip_neighbours."""
    rng = random.Random(case.noise_seed ^ 0x5EED)
    chosen = {i for i in range(1, n - 1) if rng.random() < case.skip_rate}
    if case.skip_neighbours:
        chosen |= {case.culprit - 1, case.culprit + 1}
    return frozenset(chosen - {0, n - 1, case.culprit})


def bisect_once(case: Case) -> Bisection:
    shas = history(case.repo)
    index = positions(case.repo)
    stats.MISS_PRIOR = case.miss_prior
    stats.FALSE_ALARM_PRIOR = case.false_alarm_prior
    stats.p_bad = MODELS[case.model]  # a variant under trial (--tune)
    scratch = Path(case.scratch) / f"worker-{os.getpid()}"
    scratch.mkdir(parents=True, exist_ok=True)
    predicate = SyntheticPredicate(
        shas,
        index,
        case.culprit,
        case.miss,
        unbuildable(case, len(shas)),
        case.noise_seed,
    )

    def make_revert(commit: str) -> Path:
        patch = scratch / f"revert-{commit[:12]}"
        patch.write_text(commit + "\n")
        return patch

    git = TimedGitBisect(scratch / "state.git", Path(case.repo) / "objects")
    if case.drop_contradicted:
        git.drop_contradicted = index
    bisector = RecordingBisector(
        predicate,
        case.bad_end_prior,
        git=git,
        good=[shas[0]],
        bad=shas[-1],
        policy=Policy(**dict(case.policy)),
        journal=MemoryJournal(),
        parents=lambda c: [shas[index[c] - 1]] if index[c] else [],
        make_revert=make_revert,
        say=lambda _: None,
    )
    began = time.monotonic()
    try:
        result = bisector.run()
    except KbisectError as exc:  # an engine failure is a finding: report it, carry on
        result = BisectResult(Status.ABORTED, f"CRASH {type(exc).__name__}: {exc}")
        result.runs = bisector.runs
    wall = time.monotonic() - began
    return Bisection(
        case=case,
        status=result.status.value,
        message=result.message,
        culprit=index[result.culprit] if result.culprit else None,
        suspects=tuple(sorted(index[s] for s in result.suspects)),
        steps=bisector.step_count,
        step_runs=sum(d.passes + d.fails for d in bisector.decided if d.phase == "step"),
        runs=result.runs,
        restarts=result.restarts,
        wall=wall,
        predicate_seconds=bisector.predicate_seconds,
        git_seconds=git.seconds,
        log_seconds=git.log_seconds,
        decided=bisector.decided,
    )


def run_all(cases: list[Case], jobs: int) -> list[Bisection]:
    if jobs <= 1 or len(cases) < 2 * jobs:
        return [bisect_once(c) for c in cases]
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        return list(pool.map(bisect_once, cases, chunksize=4))


# -- the benchmarks ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    label: str
    miss: float = 0.0
    skip_rate: float = 0.0
    skip_neighbours: bool = False


@dataclass(frozen=True)
class Variant:
    label: str
    policy: tuple[tuple[str, Any], ...] = ()
    miss_prior: Prior = stats.MISS_PRIOR
    false_alarm_prior: Prior = stats.FALSE_ALARM_PRIOR
    model: str = "plug-in"
    drop_contradicted: bool = False
    bad_end_prior: float | None = None


DEFAULT = Variant("defaults")


class Bench:
    def __init__(self, tmp: Path, seed: int, jobs: int) -> None:
        self.tmp = tmp
        self.seed = seed
        self.jobs = jobs
        self.repos: dict[int, str] = {}

    def repo(self, n: int) -> str:
        if n not in self.repos:
            path = self.tmp / f"history-{n}.git"
            began = time.monotonic()
            make_history(path, n)
            print(
                f"(history of {n} commits made by git fast-import in "
                f"{time.monotonic() - began:.2f} s)"
            )
            self.repos[n] = str(path)
        return self.repos[n]

    def culprits(self, n: int, count: int) -> list[int]:
        """`count` seeded culprit positions in 1..n-1 (the same for every setting and variant)."""
        rng = random.Random(f"{self.seed}-{n}")
        return [rng.randint(1, n - 1) for _ in range(count)]

    def cases(self, n: int, count: int, setting: Setting, variant: Variant) -> list[Case]:
        return [
            Case(
                repo=self.repo(n),
                scratch=str(self.tmp),
                culprit=c,
                miss=setting.miss,
                skip_rate=setting.skip_rate,
                skip_neighbours=setting.skip_neighbours,
                noise_seed=self.seed * 1_000_003 + j,
                policy=variant.policy,
                miss_prior=variant.miss_prior,
                false_alarm_prior=variant.false_alarm_prior,
                model=variant.model,
                drop_contradicted=variant.drop_contradicted,
                bad_end_prior=variant.bad_end_prior,
            )
            for j, c in enumerate(self.culprits(n, count))
        ]

    def run(self, n: int, count: int, setting: Setting, variant: Variant = DEFAULT) -> Summary:
        return Summary(run_all(self.cases(n, count, setting, variant), self.jobs))


@dataclass
class Summary:
    runs: list[Bisection]

    def share(self, category: str) -> float:
        return sum(b.category == category for b in self.runs) / len(self.runs)

    def confirmed(self) -> float:
        return sum(
            b.category == "exact" and b.status == Status.CONFIRMED.value for b in self.runs
        ) / len(self.runs)

    def mean(self, what: Callable[[Bisection], float]) -> float:
        return statistics.fmean(what(b) for b in self.runs)

    def suspects_size(self) -> str:
        """Mean number of suspects when the culprit is among them ('-' when never)."""
        sizes = [len(b.suspects) for b in self.runs if b.category == "suspects"]
        return f"{statistics.fmean(sizes):.1f}" if sizes else "-"

    def crashes(self) -> int:
        return sum(b.message.startswith("CRASH") for b in self.runs)

    def wrong(self) -> list[Bisection]:
        return [b for b in self.runs if b.category == "wrong"]


def bench_steps(bench: Bench, ks: Iterable[int], count: int) -> None:
    print(
        f"\n1. Steps and predicate runs against ceil(log2 N): deterministic predicate, "
        f"{count} seeded culprits per N"
    )
    head = (
        f"{'N':>6} {'log2N':>5} {'steps mean':>10} {'max':>4} {'runs/step':>9} "
        f"{'step runs':>9} {'all runs':>8} {'exact':>6} {'s/bisect':>8}"
    )
    print(head)
    print("-" * len(head))
    for k in ks:
        n = 2**k
        s = bench.run(n, count, Setting("0%"))
        bound = math.ceil(math.log2(n))
        print(
            f"{n:>6} {bound:>5} {s.mean(lambda b: b.steps):>10.2f} "
            f"{max(b.steps for b in s.runs):>4} "
            f"{s.mean(lambda b: b.step_runs) / s.mean(lambda b: b.steps):>9.2f} "
            f"{s.mean(lambda b: b.step_runs):>9.1f} {s.mean(lambda b: b.runs):>8.1f} "
            f"{s.share('exact'):>6.0%} {s.mean(lambda b: b.wall):>8.2f}"
        )
    print(
        "targets: steps <= ceil(log2 N); exact 100%. 'all runs' adds the ends (2 x end_runs) "
        "and the validation (culprit, parent, revert: validate_runs each)"
    )


def accuracy_table(rows: list[tuple[str, Summary]], baseline: Summary | None) -> None:
    head = (
        f"{'setting':<28} {'exact':>6} {'(conf.)':>7} {'suspects':>8} {'(of)':>4} {'wrong':>6} "
        f"{'crash':>5} {'runs':>6} {'x 0%':>5} {'steps':>6} {'restarts':>8} {'s/bisect':>8}"
    )
    print(head)
    print("-" * len(head))
    base = baseline.mean(lambda b: b.runs) if baseline else None
    for label, s in rows:
        runs = s.mean(lambda b: b.runs)
        ratio = f"{runs / base:5.2f}" if base else "    -"
        print(
            f"{label:<28} {s.share('exact'):>6.1%} {s.confirmed():>7.1%} "
            f"{s.share('suspects'):>8.1%} {s.suspects_size():>4} {s.share('wrong'):>6.1%} "
            f"{s.crashes():>5} "
            f"{runs:>6.1f} {ratio} "
            f"{s.mean(lambda b: b.steps):>6.1f} {s.mean(lambda b: b.restarts):>8.2f} "
            f"{s.mean(lambda b: b.wall):>8.2f}"
        )


def diagnose(label: str, s: Summary) -> None:
    """Which decisions went wrong, and what became of the bisections that had one."""
    had = [b for b in s.runs if b.first_wrong is not None]
    if not had:
        return
    recovered = sum(b.category == "exact" for b in had)
    print(
        f"  {label}: {len(had)} bisections made a wrong decision; {recovered} still ended "
        f"on the right culprit (validation, restarts)"
    )
    kinds: Counter[str] = Counter()
    for b in had:
        d = b.first_wrong
        assert d is not None
        kinds[f"{d.phase} {d.truth} judged {d.verdict}"] += 1
    for kind, n in kinds.most_common():
        print(f"    first wrong decision: {kind:<34} {n:>4}")
    for b in s.wrong():
        d = b.first_wrong
        what = (
            f"{d.phase}"
            + (f" #{d.step_number}" if d.step_number else "")
            + f" at {d.position}: {d.truth} judged {d.verdict} after {d.passes} pass "
            f"{d.fails} fail, miss estimate {d.miss_estimate:.2f}"
            if d
            else "no wrong decision"
        )
        got = b.culprit if b.culprit is not None else f"suspects {list(b.suspects)[:6]}"
        print(
            f"    wrong: culprit {b.case.culprit} -> {got} ({b.status}, "
            f"{b.restarts} restarts); first wrong: {what}"
        )
        if b.message.startswith("CRASH"):
            print(f"      {b.message}")


SETTINGS = {
    "0": Setting("bad passes 0%"),
    "10": Setting("bad passes 10%", miss=0.1),
    "30": Setting("bad passes 30%", miss=0.3),
    "skip": Setting("10% unbuildable", skip_rate=0.1),
    "neighbours": Setting("10% unb. + culprit's nbrs", skip_rate=0.1, skip_neighbours=True),
    "skip30": Setting("10% unbuildable, 30%", miss=0.3, skip_rate=0.1),
}
"""Part 2's settings by name (--settings). Unbuildable commits never include the culprit or the
ends; 'neighbours' also makes the culprit's parent and child unbuildable."""


def bench_accuracy(bench: Bench, k: int, count: int, names: list[str]) -> None:
    n = 2**k
    print(
        f"\n2. Accuracy over {count} bisections per setting, N = {n} (k = {k}), "
        "default Policy; a bad commit passes with the given probability, good commits "
        "always pass"
    )
    settings = [SETTINGS[name] for name in names]
    rows = []
    for setting in settings:
        began = time.monotonic()
        rows.append((setting.label, bench.run(n, count, setting)))
        print(f"({setting.label}: {time.monotonic() - began:.0f} s)", flush=True)
    by_label = dict(rows)
    baseline = by_label.get(SETTINGS["0"].label)
    accuracy_table(rows, baseline)
    print(
        "exact = reported culprit is the true one ((conf.) of them confirmed by validation); "
        "suspects = no culprit, true one among the untestable suspects ((of) how many, on "
        "average); crash = the engine raised; runs = predicate runs "
        "per bisection, ends and validation included; x 0% = runs against the noise-free "
        "bisection"
    )
    print("targets: exact 100% at 0%; exact >= 99% at 30% with runs <= 4 x the 0% runs")
    for m in (0.0, 0.1, 0.3):
        s = by_label.get(f"bad passes {m:.0%}")
        if s is None:
            continue
        note = ""
        if baseline and m > 0:
            ratio = s.mean(lambda b: b.runs) / baseline.mean(lambda b: b.runs)
            note = f", runs x{ratio:.2f} (target <= 4: {'met' if ratio <= 4 else 'NOT met'})"
        target = 1.0 if m == 0 else 0.99 if m <= 0.3 else None
        if target is not None:
            met = "met" if s.share("exact") >= target else "NOT met"
            print(
                f"  at {m:.0%}: exact {s.share('exact'):.1%} (target >= {target:.0%}: {met}){note}"
            )
    print("diagnosis:")
    for label, s in rows:
        diagnose(label, s)


def bench_overhead(bench: Bench, n: int, count: int) -> None:
    print(
        f"\n3. kbisect's own time outside the predicate, N = {n}, {count} bisections each "
        "(one at a time)"
    )
    head = (
        f"{'predicate':<22} {'steps':>6} {'trials':>6} {'wall s':>7} {'pred. s':>7} "
        f"{'git s':>6} {'s/step':>7} {'max':>6} {'ms/trial':>8} {'git share':>9} "
        f"{'(log)':>5}"
    )
    print(head)
    print("-" * len(head))
    serial = Bench(bench.tmp, bench.seed, jobs=1)
    serial.repos = bench.repos
    for setting in (Setting("deterministic"), Setting("bad passes 30%", miss=0.3)):
        s = serial.run(n, count, setting)
        overhead = [b.wall - b.predicate_seconds for b in s.runs]
        per_step = [o / b.steps for o, b in zip(overhead, s.runs, strict=True)]
        total = sum(overhead)
        print(
            f"{setting.label:<22} {s.mean(lambda b: b.steps):>6.1f} "
            f"{s.mean(lambda b: b.runs):>6.1f} {s.mean(lambda b: b.wall):>7.2f} "
            f"{s.mean(lambda b: b.predicate_seconds):>7.4f} "
            f"{s.mean(lambda b: b.git_seconds):>6.2f} {statistics.fmean(per_step):>7.3f} "
            f"{max(per_step):>6.3f} {1000 * total / sum(b.runs for b in s.runs):>8.1f} "
            f"{sum(b.git_seconds for b in s.runs) / total:>9.0%} "
            f"{sum(b.log_seconds for b in s.runs) / total:>5.0%}"
        )
    print(
        "s/step = (wall - time inside predicate.trial) / step decisions, ends and validation "
        "included in the numerator; git = GitBisect start/mark/log, (log) = of which "
        "`git bisect log`"
    )
    print("target: < 0.5 s per step")


TUNE_VARIANTS = [
    DEFAULT,
    Variant("fix: drop contradicted goods", drop_contradicted=True),
    Variant(
        "fix + end_runs=5 validate_runs=5",
        (("end_runs", 5), ("validate_runs", 5)),
        drop_contradicted=True,
    ),
    Variant("fix + alpha=0.001", (("alpha", 0.001),), drop_contradicted=True),
    Variant("fix + MISS_PRIOR=(1,4) [mean .2]", miss_prior=(1.0, 4.0), drop_contradicted=True),
    Variant("fix + MISS_PRIOR=(1.5,3.5) [mean .3]", miss_prior=(1.5, 3.5), drop_contradicted=True),
    Variant("fix + marginal", model="marginal", drop_contradicted=True),
    Variant("fix + bad end P(bad)=0.99", bad_end_prior=0.99, drop_contradicted=True),
    Variant(
        "fix + marginal + bad end P(bad)=0.95",
        model="marginal",
        bad_end_prior=0.95,
        drop_contradicted=True,
    ),
    Variant(
        "fix + MISS_PRIOR=(1,4) + bad end P(bad)=0.99",
        miss_prior=(1.0, 4.0),
        bad_end_prior=0.99,
        drop_contradicted=True,
    ),
]
"""Part 4 (--tune): 'fix' and 'bad end P(bad)' emulate engine changes, 'marginal' a stats.p_bad
change, from this process (nothing under src/ is changed)."""


def bench_tune(bench: Bench, k: int, count: int, variants: list[Variant]) -> None:
    n = 2**k
    print(
        f"\n4. Policy, prior and engine variants, N = {n}, {count} bisections per cell (the "
        "same culprits and noise seeds as part 2); 'fix' emulates an engine change: a restart "
        "drops the good commits a later verdict contradicted; 'marginal' integrates the noise "
        "rates out of stats.p_bad"
    )
    head = (
        f"{'variant':<42} {'exact 0%':>8} {'10%':>6} {'30%':>6} {'runs 0%':>7} "
        f"{'10%':>5} {'30%':>5} {'x 0%':>5}  30%: {'crash':>5} {'ends':>4} {'bad>good':>8}"
    )
    print(head)
    print("-" * len(head))
    for variant in variants:
        got = {m: bench.run(n, count, Setting("", miss=m), variant) for m in (0.0, 0.1, 0.3)}
        runs = {m: s.mean(lambda b: b.runs) for m, s in got.items()}
        noisy = got[0.3]
        ends = sum(b.status == Status.ENDS_NOT_REPRODUCED.value for b in noisy.runs)
        misjudged = sum(d.wrong and d.truth == "bad" for b in noisy.runs for d in b.decided)
        print(
            f"{variant.label:<42} {got[0.0].share('exact'):>8.1%} "
            f"{got[0.1].share('exact'):>6.1%} {noisy.share('exact'):>6.1%} "
            f"{runs[0.0]:>7.1f} {runs[0.1]:>5.1f} {runs[0.3]:>5.1f} "
            f"{runs[0.3] / runs[0.0]:>5.2f}       {noisy.crashes():>5} {ends:>4} {misjudged:>8}",
            flush=True,
        )
    print(
        "crash = git refused the restart (a good end below the new bad end); ends = ends not "
        "reproduced; bad>good = decisions (all phases) that judged a bad commit good"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps-k", default="6,8,10", help="part 1: N = 2^k for each k")
    parser.add_argument("--steps-count", type=int, default=20, help="part 1: culprits per N")
    parser.add_argument("--accuracy-k", type=int, default=8, help="parts 2 and 4: N = 2^k")
    parser.add_argument("--count", type=int, default=200, help="part 2: bisections per setting")
    parser.add_argument(
        "--settings", default="0,10,30,skip,neighbours", help=f"part 2: of {','.join(SETTINGS)}"
    )
    parser.add_argument("--overhead-commits", type=int, default=1000)
    parser.add_argument("--overhead-count", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--parts", default="steps,accuracy,overhead")
    parser.add_argument("--tune", action="store_true", help="also part 4: policy variants")
    parser.add_argument("--tune-count", type=int, help="part 4: bisections per cell (--count)")
    parser.add_argument("--tune-variants", help="part 4: indices into TUNE_VARIANTS (all)")
    args = parser.parse_args()
    parts = set(args.parts.split(",")) | ({"tune"} if args.tune else set())
    p = Policy()
    git_version = subprocess.run(["git", "version"], capture_output=True, text=True).stdout
    print(
        f"{git_version.strip()}; "
        f"{os.cpu_count()} cores, {args.jobs} worker processes; seed {args.seed}; Policy "
        f"alpha={p.alpha} min_runs={p.min_runs} max_runs={p.max_runs} end_runs={p.end_runs} "
        f"validate_runs={p.validate_runs} restarts={p.restarts}; MISS_PRIOR={stats.MISS_PRIOR} "
        f"FALSE_ALARM_PRIOR={stats.FALSE_ALARM_PRIOR}"
    )
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kbisect-bench-bisect-") as tmp:
        bench = Bench(Path(tmp), args.seed, args.jobs)
        if "steps" in parts:
            ks = [int(k) for k in args.steps_k.split(",")]
            bench_steps(bench, ks, args.steps_count)
        if "accuracy" in parts:
            bench_accuracy(bench, args.accuracy_k, args.count, args.settings.split(","))
        if "overhead" in parts:
            bench_overhead(bench, args.overhead_commits, args.overhead_count)
        if "tune" in parts:
            chosen = (
                [TUNE_VARIANTS[int(i)] for i in args.tune_variants.split(",")]
                if args.tune_variants
                else TUNE_VARIANTS
            )
            bench_tune(bench, args.accuracy_k, args.tune_count or args.count, chosen)
    print(f"\ntotal {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
