"""Regression tracking: each subtest of a run against its baseline, and regressions that stay
open across runs until a run sees the test pass again.

Repeats of a cell are pooled per subtest (failed in k of n runs with a verdict), a failure rate
with its 95% interval (kbisect.results.rates). The baseline of a subtest is the same test in the
previous completed run of the same pipeline: at the same revision if that run had it, else at
that run's newest revision (a nightly whose newest tag moved on compares the new tag with the
previous newest). A rate *shifts* when it flips cleanly (every run passed before, every run
fails now, or the other way round) or when its interval no longer overlaps the baseline's; one
unlucky repeat never does. Classes:

- REGRESSION: the failure rate shifted up against the baseline (with one run per cell: failed
  now, passed in the baseline).
- FIXED: passes in every run now, and the rate shifted down (it failed in every baseline run).
- STILL FAILING: fails in every run now and failed (or was flaky) in the baseline.
- NEVER PASSED: fails now, and no earlier run ever saw it pass.
- FLAKY: passed in some repeats and failed in others, with no shift up: a state with its rate.
- NEW: no earlier run has this test.
- INFRA: no verdict now, only infrastructure errors.
- PASS, SKIP: passing (also after a flaky baseline: no shift), or not testable here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from kbisect.results.model import (
    CellRecord,
    Change,
    ChangeRecord,
    RegressionRecord,
    ResultStatus,
    RunStatus,
    SubtestKey,
)
from kbisect.results.rates import Rate, Shift, shift
from kbisect.results.store import ResultsStore

CELL = "cell"
"""The pseudo-subtest for a cell that has no subtests (build failure, deploy error)."""


@dataclass
class Pool:
    passes: int = 0
    fails: int = 0
    errors: int = 0
    skips: int = 0

    def add(self, status: ResultStatus) -> None:
        if status is ResultStatus.PASS:
            self.passes += 1
        elif status is ResultStatus.FAIL:
            self.fails += 1
        elif status is ResultStatus.SKIP:
            self.skips += 1
        else:  # ERROR, MISS
            self.errors += 1

    @property
    def rate(self) -> Rate:
        """The failure rate over the runs with a verdict (errors and skips left out)."""
        return Rate(self.fails, self.passes + self.fails)

    @property
    def status(self) -> str:
        if self.fails and self.passes:
            return "FLAKY"
        if self.fails:
            return "FAIL"
        if self.passes:
            return "PASS"
        if self.errors:
            return "ERROR"
        return "SKIP"


def pool(cells: Iterable[CellRecord]) -> dict[SubtestKey, Pool]:
    """Subtest results of a run's cells, repeats pooled."""
    pools: dict[SubtestKey, Pool] = defaultdict(Pool)
    for cell in cells:
        base = (cell.tree, cell.rev, cell.variant, cell.profile, cell.host, cell.job)
        if not cell.subtests:
            pools[SubtestKey(*base, CELL)].add(cell.status)
            continue
        for sub in cell.subtests:
            pools[SubtestKey(*base, sub.name)].add(sub.status)
        # kernel evidence fails the cell even when every subtest passed: a line of its own
        if cell.evidence and cell.status is ResultStatus.FAIL:
            pools[SubtestKey(*base, CELL)].add(ResultStatus.FAIL)
    return dict(pools)


def _classify(now: Pool, baseline: Pool | None, ever_passed: bool, seen_before: bool) -> Change:
    status = now.status
    if status == "ERROR":
        return Change.INFRA
    if status == "SKIP":
        return Change.SKIP
    moved = shift(now.rate, baseline.rate) if baseline is not None else Shift.NONE
    if moved is Shift.UP and seen_before:
        return Change.REGRESSION
    if status == "FLAKY":
        return Change.FLAKY
    if not seen_before:
        return Change.NEW
    if status == "PASS":
        return Change.FIXED if moved is Shift.DOWN else Change.PASS
    # status == "FAIL", and not a shift up from the baseline
    if not ever_passed:
        return Change.NEVER_PASSED
    return Change.STILL_FAILING


def classify_run(
    store: ResultsStore, run_id: int, *, use_history: bool = True
) -> list[ChangeRecord]:
    """Classify a run's subtests against the earlier completed runs of its pipeline, store the
    result, and open and close regressions accordingly (`use_history=False`: baseline none)."""
    run = store.get_run(run_id)
    assert run is not None
    history = [
        r
        for r in store.runs(kind=run.kind, status=RunStatus.FINISHED)
        if r.id < run_id and r.pipeline == run.pipeline and use_history
    ]
    previous = history[0] if history else None
    baseline_changes = {c.key: c for c in store.changes(previous.id)} if previous else {}
    newest_rev_in_baseline: dict[tuple[str, ...], ChangeRecord] = {}
    for c in baseline_changes.values():  # the rows are ordered by rev; keep the newest per line
        newest_rev_in_baseline[c.key.line] = c
    last_pass: dict[tuple[str, ...], int] = {}
    seen: set[tuple[str, ...]] = set()
    for r in reversed(history):  # oldest first, so newer runs overwrite
        for c in store.changes(r.id):
            seen.add(c.key.line)
            if c.passes:
                last_pass[c.key.line] = r.id
    records = []
    for key, now in sorted(pool(store.cells(run_id)).items()):
        base = baseline_changes.get(key) or newest_rev_in_baseline.get(key.line)
        base_pool = Pool(base.passes, base.fails, base.errors) if base else None
        base_status = base_pool.status if base_pool else None
        change = _classify(now, base_pool, key.line in last_pass, key.line in seen)
        records.append(
            ChangeRecord(
                key=key,
                change=change,
                passes=now.passes,
                fails=now.fails,
                errors=now.errors,
                baseline_run=previous.id if base and previous else None,
                baseline_status=base_status,
                last_pass_run=run_id if now.passes else last_pass.get(key.line),
            )
        )
    store.record_changes(run_id, records)
    _track(store, run_id, records, baseline_changes, newest_rev_in_baseline)
    return records


def _track(
    store: ResultsStore,
    run_id: int,
    records: list[ChangeRecord],
    baseline: dict[SubtestKey, ChangeRecord],
    newest: dict[tuple[str, ...], ChangeRecord],
) -> None:
    open_by_line = {r.line: r for r in store.regressions("open")}
    for c in records:
        line = c.key.line
        if c.change is Change.REGRESSION and line not in open_by_line:
            base = baseline.get(c.key) or newest.get(line)
            good_rev = base.key.rev if base else None
            open_by_line[line] = _opened(store, line, run_id, c.key.rev, good_rev)
        elif c.change in (Change.FIXED, Change.PASS) and line in open_by_line:
            store.fix_regression(open_by_line.pop(line).id, run_id, c.key.rev)


def _opened(
    store: ResultsStore, line: tuple[str, ...], run_id: int, rev: str, good_rev: str | None
) -> RegressionRecord:
    t, v, p, h, j, s = line
    new_id = store.open_regression((t, v, p, h, j, s), run_id, rev, good_rev)
    return next(r for r in store.regressions("open") if r.id == new_id)


def variant_table(
    cells: Iterable[CellRecord], rev: str
) -> tuple[list[str], list[str], dict[tuple[str, str], Pool]]:
    """For one revision: variants, subtests, and pass/fail counts over repeats per (subtest,
    variant) — the seed case at a glance."""
    chosen = [c for c in cells if c.rev == rev]
    pools = pool(chosen)
    variants = sorted({k.variant for k in pools})
    subtests: list[str] = []
    for c in chosen:
        for s in c.subtests:
            if s.name not in subtests:
                subtests.append(s.name)
    if any(k.subtest == CELL for k in pools):
        subtests.append(CELL)
    table: dict[tuple[str, str], Pool] = defaultdict(Pool)
    for key, p in pools.items():
        into = table[(key.subtest, key.variant)]
        into.passes += p.passes
        into.fails += p.fails
        into.errors += p.errors
        into.skips += p.skips
    return variants, subtests, dict(table)
