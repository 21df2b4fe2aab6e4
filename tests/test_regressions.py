"""Regression tracking over several runs (kbisect.pipeline.regressions) with scripted results in
a real store: the classes against the baseline, a regression's lifecycle, and what repeats
change: a flake is FLAKY with its rate, a regression needs a shift of the failure rate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from kbisect.pipeline.outputs import summary
from kbisect.pipeline.regressions import classify_run, pool
from kbisect.results.model import CellRecord, ResultStatus, SubtestRecord
from kbisect.results.store import ResultsStore

P, F = "PASS", "FAIL"


def scripted_run(store: ResultsStore, results: dict[tuple[str, str, str], list[str]]) -> int:
    """A finished nightly whose cells say what `results` says: (rev, variant, subtest) ->
    statuses, one per repeat."""
    run = store.start_run("nightly", pipeline="nightly")
    per_cell: dict[tuple[str, str, int], list[SubtestRecord]] = {}
    for (rev, variant, subtest), statuses in results.items():
        for repeat, status in enumerate(statuses, 1):
            per_cell.setdefault((rev, variant, repeat), []).append(
                SubtestRecord(subtest, ResultStatus(status))
            )
    now = datetime.now(UTC)
    for (rev, variant, repeat), subs in per_cell.items():
        worst = "FAIL" if any(s.status is ResultStatus.FAIL for s in subs) else "PASS"
        store.record_cell(run.id, CellRecord(
            tree="t", rev=rev, variant=variant, profile="p", host="h", job="j", repeat=repeat,
            status=ResultStatus(worst), subtests=tuple(subs), started=now,
            finished=now + timedelta(seconds=1),
        ))  # fmt: skip
    classify_run(store, run.id)
    store.finish_run(run.id)
    return run.id


def test_baseline_classes_and_regression_lifecycle(tmp_path: Path) -> None:
    with ResultsStore(tmp_path) as store:
        first = scripted_run(store, {
            ("v1", "a", "odirect"): ["PASS"], ("v1", "a", "soak"): ["FAIL"],
            ("v1", "b", "odirect"): ["PASS"], ("v1", "b", "fork"): ["PASS"],
        })  # fmt: skip
        assert {c.change for c in store.changes(first)} == {"NEW"}
        second = scripted_run(store, {
            ("v2", "a", "odirect"): ["FAIL"],            # passed at v1: regression
            ("v2", "a", "soak"): ["FAIL"],               # never passed
            ("v2", "b", "odirect"): ["PASS", "FAIL"],    # flaky
            ("v2", "b", "fork"): ["PASS"],               # still passing
            ("v2", "b", "churn"): ["PASS"],              # new test
        })  # fmt: skip
        got = {(c.key.variant, c.key.subtest): c.change for c in store.changes(second)}
        assert got == {
            ("a", "odirect"): "REGRESSION", ("a", "soak"): "NEVER PASSED",
            ("b", "odirect"): "FLAKY", ("b", "fork"): "PASS", ("b", "churn"): "NEW",
        }  # fmt: skip
        opened = store.regressions("open")
        assert [(r.line[1], r.line[5], r.opened_rev, r.good_rev) for r in opened] == [
            ("a", "odirect", "v2", "v1")
        ]
        third = scripted_run(store, {("v3", "a", "odirect"): ["FAIL"]})
        assert [c.change for c in store.changes(third)] == ["STILL FAILING"]
        assert len(store.regressions("open")) == 1, "still the same open regression"
        fourth = scripted_run(store, {("v4", "a", "odirect"): ["PASS", "PASS"]})
        assert [c.change for c in store.changes(fourth)] == ["FIXED"]
        fixed = store.regressions("fixed")
        assert [(r.opened_run, r.fixed_run, r.fixed_rev) for r in fixed] == [(second, fourth, "v4")]
        assert store.regressions("open") == []
        # an infrastructure-only result is INFRA, not a failure
        fifth = store.start_run("nightly", pipeline="nightly")
        store.record_cell(fifth.id, CellRecord(
            tree="t", rev="v5", variant="a", profile="p", host="h", job="j", repeat=1,
            status=ResultStatus.ERROR, reason="host died",
        ))  # fmt: skip
        assert [c.change for c in classify_run(store, fifth.id)] == ["INFRA"]


def changes_of(store: ResultsStore, run_id: int) -> dict[str, tuple[str, int, int]]:
    """subtest -> (class, fails, runs with a verdict) of one run (one variant, one revision)."""
    return {
        c.key.subtest: (c.change.value, c.fails, c.passes + c.fails) for c in store.changes(run_id)
    }


def test_with_three_repeats_a_flake_is_flaky_and_a_regression_is_a_shift(tmp_path: Path) -> None:
    with ResultsStore(tmp_path) as store:
        scripted_run(store, {
            ("v1", "none", "churn"): [P, P, P], ("v1", "none", "soak"): [P, P, P],
            ("v1", "none", "gup"): [F, F, F], ("v1", "none", "odirect"): [P, P, P],
        })  # fmt: skip
        second = scripted_run(store, {
            ("v2", "none", "churn"): [P, F, P],    # one unlucky repeat: no regression
            ("v2", "none", "soak"): [F, F, F],     # every repeat: a regression
            ("v2", "none", "gup"): [P, P, P],      # every repeat passes now: fixed
            ("v2", "none", "odirect"): [F, F, P],  # 2 of 3 after 0 of 3: not beyond chance
        })  # fmt: skip
        assert changes_of(store, second) == {
            "churn": ("FLAKY", 1, 3), "soak": ("REGRESSION", 3, 3),
            "gup": ("FIXED", 0, 3), "odirect": ("FLAKY", 2, 3),
        }  # fmt: skip
        assert [r.line[5] for r in store.regressions("open")] == ["soak"]
        third = scripted_run(store, {
            ("v3", "none", "churn"): [P, P, P],    # after a flaky baseline: passing, not fixed
            ("v3", "none", "soak"): [F, P, F],     # flaky now: the regression stays open
            ("v3", "none", "odirect"): [F, F, F],  # failing after flaky: still failing
        })  # fmt: skip
        assert changes_of(store, third) == {
            "churn": ("PASS", 0, 3), "soak": ("FLAKY", 2, 3), "odirect": ("STILL FAILING", 3, 3),
        }  # fmt: skip
        assert [r.line[5] for r in store.regressions("open")] == ["soak"]
        fourth = scripted_run(store, {("v4", "none", "churn"): [P] * 10})
        fifth = scripted_run(store, {("v5", "none", "churn"): [F] * 7 + [P] * 3})
        # flaky now, but 7 of 10 after 0 of 10 is no accident: a regression, and it opens
        assert changes_of(store, fourth) == {"churn": ("PASS", 0, 10)}
        assert changes_of(store, fifth) == {"churn": ("REGRESSION", 7, 10)}
        opened = {r.line[5]: (r.opened_rev, r.good_rev) for r in store.regressions("open")}
        assert opened == {"soak": ("v2", "v1"), "churn": ("v5", "v4")}
        (pooled,) = pool(store.cells(fifth)).values()
        assert (pooled.rate.fails, pooled.rate.runs) == (7, 10) and pooled.rate.flaky


def test_errors_and_skips_are_not_runs_of_the_rate(tmp_path: Path) -> None:
    with ResultsStore(tmp_path) as store:
        first = scripted_run(store, {("v1", "a", "t"): [P, "ERROR", F, "SKIP"]})
        (change,) = store.changes(first)
        assert (change.change.value, change.passes, change.fails, change.errors) == (
            "FLAKY", 1, 1, 1,
        )  # fmt: skip


def test_the_summary_gives_counts_of_repeats_and_a_flaky_rate(tmp_path: Path) -> None:
    with ResultsStore(tmp_path) as store:
        run = scripted_run(store, {
            ("v1", "x/none", "churn"): [P, F, P], ("v1", "x/none", "soak"): [F, F, F],
            ("v1", "x/vm-io", "churn"): [P, P, P], ("v1", "x/vm-io", "soak"): [P, "ERROR", P],
        })  # fmt: skip
        text = summary(store, run, store.changes(run), {})
    flaky = text.split("FLAKY: 1\n")[1].split("\n\n")[0]
    assert flaky == "  v1 x/none h j churn: failed 1 of 3 (33%, 95% interval 6-79%)"
    grid = text.split("variants at v1 ")[1].split("\n\n")[0].splitlines()
    assert grid[0] == "(passes/runs; a flaky one fails LOW-HIGH%: 95% interval) on h"
    assert grid[1].split() == ["subtest", "none", "vm-io"]
    assert grid[2].split() == [
        "churn", "FLAKY", "2/3", "fails", "6-79%", "3/3",
    ]  # fmt: skip
    assert grid[3].split() == ["soak", "FAIL", "0/3", "2/2", "+1", "err"]
