"""What the results browser's pages say: expected against observed in the variants grid, a run
page that leads with its verdict, trends and bisection steps as inline SVG, the build page, page
titles, and bidirectional controls neutralized. The stores are made through the ResultsStore API
and classified by the regression tracker (test_browser.make_results and runs added here); the
expectations are the seed experiment's own, loaded from seeds/ as `results.render` loads them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from tests.test_bisect_engine import Scripted, chain, commit, flaky
from tests.test_browser import BUILD_KEY, T0, Built, add_run, make_results, pages

from kbisect.bisect.engine import Bisector, BisectResult
from kbisect.bisect.session import StoreJournal, results_dir, running
from kbisect.bisect.stats import Policy
from kbisect.browser import render_site
from kbisect.browser.bisection import steps_of
from kbisect.browser.expect import Expected, Verdict, expectations_of, failure_tag, judge
from kbisect.browser.safety import visible
from kbisect.browser.svg import Band, Line, Step, line_chart, step_chart, strip_chart
from kbisect.config.project import load_project
from kbisect.pipeline.regressions import classify_run
from kbisect.results.model import (
    BuildRecord,
    CellRecord,
    ResultStatus,
    RunStatus,
    SubtestRecord,
    TrialRecord,
)
from kbisect.results.store import ResultsStore

ROOT = Path(__file__).resolve().parent.parent
RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE


@pytest.fixture(scope="module")
def expectations() -> dict[str, dict[str, str]]:
    return expectations_of(load_project(ROOT).experiments)


@pytest.fixture
def built(tmp_path: Path) -> Iterator[Built]:
    b = make_results(tmp_path)
    yield b
    b.store.close()


def _title(html: str) -> str:
    found = re.search(r"<title>(.*?)</title>", html, re.S)
    assert found is not None
    return found[1]


# -- expected against observed -------------------------------------------------------------------


def test_judging_pooled_results_against_an_expectation() -> None:
    assert judge("pass", 3, 0, 0) is Verdict.EXPECTED
    assert judge("pass", 2, 1, 0) is Verdict.UNEXPECTED
    assert judge("fail", 0, 3, 0) is Verdict.EXPECTED
    assert judge("fail", 1, 2, 0) is Verdict.UNEXPECTED  # a pass where a failure is expected
    assert judge("flaky", 1, 2, 0) is judge("flaky", 3, 0, 0) is Verdict.EXPECTED
    assert (
        judge("skip", 0, 0, 2) is Verdict.EXPECTED and judge("skip", 1, 0, 1).value == "unexpected"
    )
    assert judge("pass", 0, 0, 0) is Verdict.NO_VERDICT  # only infrastructure errors
    assert judge(None, 0, 3, 0) is Verdict.NOT_EXPECTED
    assert (failure_tag(14, None, False), failure_tag(0, 7, False)) == ("EFAULT", "SIGBUS")
    assert (failure_tag(5, None, False), failure_tag(0, None, True)) == ("EIO", "timeout")


def test_a_flaky_expectation_with_a_range_judges_the_rate_interval() -> None:
    churn = Expected("flaky", 0.05, 0.5)
    assert str(churn) == "flaky 5-50%" and str(Expected.of("flaky")) == "flaky"
    assert judge(churn, 2, 1, 0) is Verdict.EXPECTED  # 1 of 3: 6-79% meets 5-50%
    assert judge(churn, 3, 0, 0) is Verdict.EXPECTED  # 3 runs cannot rule out a 5% flake
    assert judge(churn, 100, 0, 0) is Verdict.UNEXPECTED  # 100 can: 0-4%
    assert judge(churn, 0, 10, 0) is Verdict.UNEXPECTED  # a steady failure: 72-100%
    assert judge(churn, 1, 1, 1) is Verdict.UNEXPECTED  # a skip is never flaky
    assert judge(Expected("flaky"), 0, 10, 0) is Verdict.EXPECTED  # plain flaky: any rate


def test_the_grid_shows_counts_of_repeats_with_the_rate_and_judges_a_flaky_range(
    tmp_path: Path,
) -> None:
    """churn over three repeats: 1 of 3 failed under none (a flake, as the range expects), 3 of
    3 under vm-io (outside the range: its interval is 44-100%, the range ends at 20%)."""
    with ResultsStore(tmp_path / "results") as store:
        run = store.start_run("nightly", pipeline="seed", started=T0)
        fails = {"none": {2}, "vm-io": {1, 2, 3}}
        for variant, failing in fails.items():
            for repeat in (1, 2, 3):
                bad = repeat in failing
                status = ResultStatus.FAIL if bad else ResultStatus.PASS
                sub = SubtestRecord(
                    "churn", status, 0, "SIGBUS" if bad else "ok", 7 if bad else None
                )
                store.record_cell(run.id, CellRecord(
                    "debian-6.1", "v6.1.192-3", f"gntdev-numa/{variant}", "xen-dom0", "qemu",
                    "gntstress", repeat, status, subtests=(sub,), started=T0, finished=T0,
                ))  # fmt: skip
        store.finish_run(run.id, RunStatus.FINISHED)
        classify_run(store, run.id)
        range_ = Expected("flaky", 0.05, 0.2)
        render_site(store, expectations={
            "gntdev-numa/none": {"churn": range_}, "gntdev-numa/vm-io": {"default": range_},
        })  # fmt: skip
    got = pages(tmp_path / "results" / "site")
    grid = next(v for k, v in got.items() if "/rev-v6.1.192-3-" in k)
    none, vm_io = grid.split("<tr><th>churn</th>")[1].split("</tr>")[0].split("<td")[1:3]
    assert '<span class="st st-FLAKY">FLAKY</span>' in none
    assert 'title="failed 1 of 3 (33%, 95% interval 6-79%)">2/3</span>' in none
    assert '<small class="rate">fails 6-79%</small>' in none
    assert "expected flaky 5-20%" in none and "unexpected" not in none
    assert 'title="failed 3 of 3 (100%, 95% interval 44-100%)">0/3</span>' in vm_io
    assert 'class="unexpected"' in vm_io and "unexpected: expected flaky 5-20%" in vm_io
    assert 'class="rate"' not in vm_io  # not flaky: no interval in small print
    verdict = got[f"run/{run.id}/index.html"].split("<h2>Matrix</h2>")[0]
    assert "expected flaky 5-20%, got FAIL (0 of 3 passed; fails 100%, 95% interval 44-100%)" in (
        verdict
    )
    assert "gntdev-numa/none" not in verdict


def _seed_run(store: ResultsStore, day: int, rev: str) -> int:
    """The seed table at ``rev``: vm-io fails its GUP subtests with EFAULT (proc-pid-mem with
    EIO), none's numa-soak is killed by SIGBUS, and (unexpectedly) mempolicy's does too."""
    run = store.start_run("nightly", pipeline="seed", started=T0 + timedelta(days=day))
    names = ("odirect-read", "proc-pid-mem", "numa-soak")
    for variant in ("vm-mixedmap", "vm-io", "none", "mempolicy"):
        subtests = []
        for name in names:
            status, errno, signal, detail = ResultStatus.PASS, 0, None, "ok"
            if variant == "vm-io" and name != "numa-soak":
                errno = 5 if name == "proc-pid-mem" else 14
                status, detail = ResultStatus.FAIL, f"{name}: <b>Bad address</b>"
            if variant in ("none", "mempolicy") and name == "numa-soak":
                status, signal, detail = ResultStatus.FAIL, 7, "killed by signal 7 (SIGBUS)"
            subtests.append(SubtestRecord(name, status, errno, detail, signal))
        failed = any(s.status is ResultStatus.FAIL for s in subtests)
        store.record_cell(
            run.id,
            CellRecord(
                "debian-6.1",
                rev,
                f"gntdev-numa/{variant}",
                "xen-dom0",
                "qemu",
                "gntstress",
                1,
                ResultStatus.FAIL if failed else ResultStatus.PASS,
                started=T0 + timedelta(days=day),
                finished=T0 + timedelta(days=day, seconds=30 + day),
                subtests=tuple(subtests),
            ),
        )
    store.finish_run(run.id, RunStatus.FINISHED, finished=T0 + timedelta(days=day, hours=1))
    classify_run(store, run.id)
    return run.id


def test_the_variants_grid_marks_expected_and_unexpected_and_how_each_failed(
    tmp_path: Path, expectations: dict[str, dict[str, str]]
) -> None:
    with ResultsStore(tmp_path / "results") as store:
        run = _seed_run(store, 1, "v6.1.192-3")
        render_site(store, expectations=expectations)
        cells = {c.variant.split("/")[1]: c.id for c in store.cells(run)}
    got = pages(tmp_path / "results" / "site")
    name, grid = next((k, v) for k, v in got.items() if "/rev-v6.1.192-3-" in k)
    assert _title(grid) == f"v6.1.192-3 · variants by subtest · run {run} &#183; kbisect"
    rows = {r.split("</th>")[0].split(">")[-1]: r for r in grid.split("<tr><th>")[1:]}
    # columns: mempolicy, none, vm-io, vm-mixedmap (sorted)
    mempolicy, none, vm_io, mixedmap = rows["numa-soak"].split("<td")[1:5]
    assert "expected fail" in none and "SIGBUS" in none and "unexpected" not in none
    assert 'class="unexpected"' in mempolicy and "unexpected: expected pass" in mempolicy
    assert f'href="cell-{cells["mempolicy"]}.html#t-numa-soak"' in mempolicy
    assert 'title="killed by signal 7 (SIGBUS)"' in mempolicy  # the detail, one click away
    assert "expected" not in mixedmap and "expected" not in vm_io  # passing as expected: quiet
    _, _, vm_io, mixedmap = rows["odirect-read"].split("<td")[1:5]
    assert "EFAULT" in vm_io and "expected fail" in vm_io
    assert 'title="odirect-read: &lt;b&gt;Bad address&lt;/b&gt;"' in vm_io
    assert "EIO" in rows["proc-pid-mem"].split("<td")[3]
    cell = got[f"run/{run}/cell-{cells['vm-io']}.html"]
    assert '<tr id="t-odirect-read">' in cell  # where the grid's link leads
    assert _title(cell).startswith(
        f"v6.1.192-3 · vm-io · odirect-read, proc-pid-mem FAIL · run {run}"
    )
    page = got[f"run/{run}/index.html"]
    verdict = page.split("<h2>Verdict</h2>")[1].split("<h2>Matrix</h2>")[0]
    assert "1 unexpected result" in verdict and "Unexpected results" in verdict
    assert "numa-soak" in verdict and "SIGBUS, expected pass, got FAIL (0 of 1 passed)" in verdict
    assert "gntdev-numa/none" not in verdict  # none's SIGBUS is what the experiment expects
    assert name


def test_without_expectations_the_grid_and_verdict_say_nothing_of_them(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "results") as store:
        run = _seed_run(store, 1, "v6.1.192-3")
        render_site(store)
    got = pages(tmp_path / "results" / "site")
    grid = next(v for k, v in got.items() if "/rev-" in k)
    assert "SIGBUS" in grid and "EFAULT" in grid and "expected" not in grid.split("<tbody>")[1]
    verdict = got[f"run/{run}/index.html"].split("<h2>Matrix</h2>")[0]
    assert "unexpected" not in verdict and "nothing new: no regression</p>" in verdict


# -- the run page --------------------------------------------------------------------------------


def test_the_run_page_leads_with_its_verdict_and_new_only_against_a_baseline(
    built: Built, expectations: dict[str, dict[str, str]]
) -> None:
    planned = [{"rev": "v6.1.192-3", "variant": f"v{i}"} for i in range(104)]
    first_of_kind = built.store.start_run("stress", meta={"cells": planned}, started=T0)
    _seed_cells = built.store.cells(built.runs[0])
    for c in _seed_cells[:2]:
        built.store.record_cell(first_of_kind.id, c)
    built.store.finish_run(first_of_kind.id, RunStatus.FINISHED)
    classify_run(built.store, first_of_kind.id)
    assert any(ch.change == "NEW" for ch in built.store.changes(first_of_kind.id))
    render_site(built.store, expectations=expectations)
    got = pages(built.results / "site")
    first = got[f"run/{first_of_kind.id}/index.html"]
    assert "cls-NEW" not in first and "No earlier run of this pipeline" in first
    assert "104 planned" in first and "v103" not in first  # no raw JSON of the planned cells
    page = got[f"run/{built.runs[1]}/index.html"]
    assert page.index("<h2>Verdict</h2>") < page.index("<h2>Matrix</h2>")
    verdict = page.split("<h2>Verdict</h2>")[1].split("<h2>Matrix</h2>")[0]
    assert "1 new regression" in verdict
    regression = verdict.split("New regressions")[1].split("</ul>")[0]
    assert f'href="cell-{built.regressed_cell}.html#t-odirect-read"' in regression
    assert "EFAULT, failed 2 of 2" in regression and "Bad address" in regression
    assert "v6.1.192-2 · gntdev-numa/vm-io · qemu/gntstress" in regression
    # the seed expects vm-io to fail O_DIRECT: its failure to read is not news, a pass to write
    # is, and so is the kernel evidence that failed the regressed cell (expected to pass)
    unexpected = verdict.split("Unexpected results")[1].split("</ul>")[0]
    assert "<strong>odirect-read" not in unexpected
    assert (
        "<strong>odirect-write</strong>" in unexpected and "expected fail, got PASS" in unexpected
    )
    assert "bad-page-map, expected pass, got FAIL" in unexpected
    earlier = got[f"run/{built.runs[0]}/index.html"]
    assert "odirect-read" in earlier.split("Unexpected results")[1].split("</ul>")[0]
    title = _title(page)
    assert title.startswith(f"run {built.runs[1]} · nightly (nightly) · v6.1.192-2 · 1 new")


def test_infrastructure_errors_are_named_with_their_reason(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "results") as store:
        run = store.start_run("nightly", pipeline="n", started=T0)
        error = store.record_cell(
            run.id,
            CellRecord(
                "t", "r", "v", "p", "h", "j", 1, ResultStatus.ERROR, reason="boot <timeout>"
            ),
        )
        store.finish_run(run.id, RunStatus.FINISHED)
        render_site(store)
    page = (tmp_path / "results/site" / f"run/{run.id}/index.html").read_text()
    verdict = page.split("<h2>Verdict</h2>")[1].split("<h2>Matrix</h2>")[0]
    assert "1 infrastructure error" in verdict and "boot &lt;timeout&gt;" in verdict
    assert f'href="cell-{error}.html"' in verdict


# -- trends and bisections -----------------------------------------------------------------------


def test_trends_show_where_a_failure_started(built: Built) -> None:
    store = built.store
    for day, rev, fails in (
        (3, "v6.1.192-2", False),
        (4, "v6.1.192-3", True),
        (5, "v6.1.192-3", True),
    ):
        add_run(store, day, rev, vm_io_fails=fails)
    store.record_build(BuildRecord(BUILD_KEY, "built", meta={"duration_s": 285.0}))
    render_site(store)
    runs = [r.id for r in reversed(store.runs())]
    site = built.results / "site"
    index = (site / "index.html").read_text()
    link = re.search(r'href="(trends/[^"]+)">nightly \(nightly\)', index)
    assert link is not None
    page = (site / link[1]).read_text()
    assert f"failing since run {runs[3]} on v6.1.192-3" in page
    band = page.split("gntdev-numa/vm-io · odirect-read")[1].split("</text>\n<text")[0]
    squares = re.findall(r'<rect class="(r\d[^"]*)"[^>]*><title>([^<]*)</title>', band)
    assert [c for c, _ in squares] == ["r3", "r0", "r3", "r0 mark", "r0"]
    assert squares[1][1] == f"run {runs[1]}: 0 of 2 passed; failed on v6.1.192-2"
    assert "Cell duration" in page and page.count("<polyline") >= 2  # a line per variant
    assert f"run {runs[0]}: new builds 4.8 min" in page  # the first run to use the build
    assert f"run {runs[1]}: no value" in page  # found in the cache: nothing to build
    assert "<svg" in page and "<script" not in page
    run_page = (site / f"run/{runs[-1]}/index.html").read_text()
    assert f'href="../../{link[1]}"' in run_page


def _run_with_boots(store: ResultsStore, day: int, boots: dict[str, list[float | None]]) -> int:
    """A nightly run with a cell per (host, boot): the boot time its deploy took, or None for
    a cell that ran on a kernel already up."""
    run = store.start_run("nightly", pipeline="nightly", started=T0 + timedelta(days=day))
    passed = (SubtestRecord("odirect-read", ResultStatus.PASS),)
    for host, seconds in boots.items():
        for repeat, boot in enumerate(seconds, 1):
            store.record_cell(run.id, CellRecord(
                "debian-6.1", "v6.1.192-3", "gntdev-numa/none", "xen-dom0", host, "gntstress",
                repeat, ResultStatus.PASS, subtests=passed, started=T0,
                finished=T0 + timedelta(seconds=30), boot_seconds=boot,
            ))  # fmt: skip
    store.finish_run(run.id, RunStatus.FINISHED)
    classify_run(store, run.id)
    return run.id


def test_trends_show_boot_time_per_host_and_gaps_where_none_was_recorded(built: Built) -> None:
    store = built.store  # its first runs are older: no boot times
    booted = _run_with_boots(store, 3, {"qemu": [4.0, None, 6.0], "rack1": [88.5, None]})
    up = _run_with_boots(store, 4, {"qemu": [None, None]})  # ran on kernels already up
    again = _run_with_boots(store, 5, {"rack1": [130.0]})
    render_site(store)
    site = built.results / "site"
    index = (site / "index.html").read_text()
    link = re.search(r'href="(trends/[^"]+)">nightly \(nightly\)', index)
    assert link is not None
    page = (site / link[1]).read_text()
    boot = page.split("<h2>Boot time</h2>")[1]
    assert 'aria-label="mean boot time per host, nightly (nightly)"' in boot
    assert f"run {booted}: qemu 5 s; rack1 88.5 s" in boot  # each boot once, the mean per host
    assert f"run {up}: no value" in boot  # nothing booted: a gap, not a zero
    assert f"run {again}: rack1 130 s" in boot
    assert f"run {min(r.id for r in store.runs())}: no value" in boot  # before boot times
    # qemu's one point, rack1's two: apart, as no line is drawn across a run without a value
    assert boot.count("<circle") == 3 and "<polyline" not in boot
    cells = store.cells(booted)
    first = next(c for c in cells if c.host == "rack1" and c.repeat == 1)
    cell_page = (site / f"run/{booted}/cell-{first.id}.html").read_text()
    assert "<tr><th>boot</th><td>88.5 s, from the deploy" in cell_page
    second = next(c for c in cells if c.host == "rack1" and c.repeat == 2)
    assert "<th>boot</th>" not in (site / f"run/{booted}/cell-{second.id}.html").read_text()


def test_a_flaky_pair_is_called_flaky_not_failing_since() -> None:
    from kbisect.browser.trends import _onset

    ids, revs = list(range(1, 9)), ["r"] * 8
    assert _onset([False, True, False, True, False, False, True, False], ids, revs)[0] == (
        "flaky: failed in 3 of 8 runs, last in run 7"
    )
    assert _onset([False, None, False, True, True, None, True, True], ids, revs) == (
        "failing since run 4 on r",
        3,
    )
    assert _onset([False, True, True, False, False], ids, revs)[0].startswith(
        "failed from run 2 on r to run 3, passing since"
    )
    assert _onset([False, True, False, True, True], ids, revs) == (
        "failing since run 4 on r (and in 1 run before)",
        3,
    )
    assert _onset([True, True], ids, revs)[0].startswith("failing in every run shown")


def test_bisection_steps_come_from_the_trials_and_take_a_posterior() -> None:
    trials = [
        TrialRecord(1, "good-end", "a" * 40, "pass"),
        TrialRecord(2, "good-end", "a" * 40, "pass"),
        TrialRecord(3, "bad-end", "b" * 40, "fail"),
        TrialRecord(4, "step", "c" * 40, "fail"),
        TrialRecord(5, "step", "c" * 40, "error"),
        TrialRecord(6, "culprit", "c" * 40, "fail"),
    ]
    # the engine's posterior follows the probe runs at c (two), not the culprit's validation
    steps = steps_of(list(reversed(trials)), "c" * 40, {"c" * 40: [0.61, 0.93]})
    assert [(s.label, s.note, s.passes, s.fails, s.errors) for s in steps] == [
        ("aaaaaaaa", "good-end", 2, 0, 0),
        ("bbbbbbbb", "bad-end", 0, 1, 0),
        ("cccccccc", "step", 0, 1, 1),
        ("cccccccc", "culprit", 0, 1, 0),
    ]
    assert [s.highlight for s in steps] == [False, False, True, True]
    assert steps[2].posterior == 0.93 and steps[0].posterior is None
    assert steps[3].posterior is None, "a validation run is not in the posterior"
    svg = step_chart(steps, "runs")
    assert svg.count('class="hover culprit"') == 2 and 'class="posterior"' in svg
    assert "step 3: cccccccc (step): 0 pass, 1 fail, 1 error; posterior 0.930" in svg


def test_the_bisection_page_draws_its_runs_per_commit(built: Built) -> None:
    render_site(built.store)
    page = (built.results / "site" / f"bisect/{built.bisection}.html").read_text()
    chart = page.split("<h2>Steps</h2>")[1].split("<table")[0]
    assert chart.count('class="hover') == 3 and chart.count('class="hover culprit"') == 2
    assert _title(page).startswith(f"bisection {built.bisection} · debian-6.1 v6.1.170-3..")
    assert "culprit bbbbbbbbbbbb · confirmed" in _title(page)
    assert 'id="posterior"' not in page, "a report from before the posterior: no chart"


def _engine_bisection(store: ResultsStore) -> tuple[int, BisectResult]:
    """A bisection the real engine ran (a seeded flaky predicate on a 32-commit chain) into the
    store, finished with a report that has its posterior, as kbisect.bisect.report writes it."""
    record = store.create_bisection({"tree": "chain", "good": [commit(0)], "bad": commit(31)})
    journal = StoreJournal(store, record.id, results_dir(store, record.id) / "bisect.log")
    result = Bisector(
        history=chain(32), predicate=Scripted(flaky(12, 0.2, seed=3)), policy=Policy(),
        journal=journal, make_revert=lambda c: Path("revert"), say=lambda _: None,
    ).run()  # fmt: skip
    report = {
        "status": result.status.value,
        "message": result.message,
        "culprit": {"commit": result.culprit, "subject": "change 12"} if result.culprit else None,
        "posterior": {"commits": result.commits, "runs": result.trace},
    }
    store.finish_bisection(record.id, result.status.value, report)
    return record.id, result


def test_the_bisection_page_charts_the_posterior_run_by_run(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "results") as store:
        bisection, result = _engine_bisection(store)
        trace, final = result.trace, result.trace[-1]
        render_site(store)
        page = (tmp_path / "results/site" / f"bisect/{bisection}.html").read_text()
        chart = page.split('id="posterior">')[1].split("</svg>")[0]
        assert "likeliest" in chart and f"final {final['best'][:8]}" in chart
        assert chart.count('class="hover"') == len(trace), "a column per run"
        for t in (trace[0], final):  # each run's tooltip: its outcome and the likeliest's %
            percent = f"{100 * t['p_best']:.1f}".rstrip("0").rstrip(".")
            assert f"{t['run']} {t['outcome']}: likeliest {percent} %" in chart
        # after the last run: the likeliest hypotheses with their probabilities
        table = page.split('id="converged"')[1].split("</table>")[0]
        for position, commit_id, p in final["top"]:
            assert f'<td>{position}</td><td class="mono">{commit_id}</td>' in table
            assert f"<td>{100 * p:.1f} %</td>" in table
        assert f"over {result.commits} commits" in page
        # the step chart's dashed line: the likeliest's probability after each probe step
        steps = page.split("<h2>Steps</h2>")[1].split("</svg>")[0]
        after_culprit = [t for t in trace if t["commit"] == final["best"]][-1]["p_best"]
        assert f"posterior {after_culprit:.3f}" in steps and 'class="posterior"' in steps


def test_a_malformed_or_hostile_posterior_is_checked_and_escaped(tmp_path: Path) -> None:
    evil = "<script>alert('top')</script>"
    with ResultsStore(tmp_path / "results") as store:
        bisection, result = _engine_bisection(store)
        record = store.get_bisection(bisection)
        assert record is not None and record.report is not None
        report = record.report
        runs = report["posterior"]["runs"]
        runs.append({"run": "x", "p_best": 0.5})  # not a run: left out
        runs.append({**runs[-2], "run": runs[-2]["run"] + 1, "outcome": evil,
                     "top": [[3, evil, 0.75], ["x", "y", 0.2]]})  # fmt: skip
        store.finish_bisection(bisection, record.status, report)
        render_site(store)
        page = (tmp_path / "results/site" / f"bisect/{bisection}.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(&#39;top&#39;)" in page
    table = page.split('id="converged"')[1].split("</table>")[0]
    assert table.count("<tr><td>") == 1 and "<td>75.0 %</td>" in table
    chart = page.split('id="posterior">')[1].split("</svg>")[0]
    assert chart.count('class="hover"') == len(result.trace) + 1


def test_a_bisection_whose_process_died_is_shown_interrupted(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "results") as store:
        record = store.create_bisection({"tree": "<b>chain</b>", "good": ["g"], "bad": "b"})
        store.add_trial(record.id, TrialRecord(1, "good-end", "a" * 40, "pass"))
        site = tmp_path / "results/site"
        page, index = site / f"bisect/{record.id}.html", site / "index.html"
        with running(store, record.id):  # this process runs it: running
            render_site(store)
            for html in (page.read_text(), index.read_text()):
                assert 'class="st st-running">running<' in html and "interrupted" not in html
        render_site(store)  # its process is gone: the same record, shown interrupted
        resume = f"interrupted — resume with `kbisect bisect --resume {record.id}`"
        for html in (page.read_text(), index.read_text()):
            assert resume in html and "st-running" not in html
        assert _title(page.read_text()).endswith(f"· {resume} &#183; kbisect")
        assert "<b>chain" not in page.read_text() and "&lt;b&gt;chain" in page.read_text()


def test_charts_escape_what_they_are_given_and_are_the_same_bytes_each_time() -> None:
    evil = f'<script>alert("x")</script>{RLO}'
    strip = strip_chart(["run <1>", "run 2"], [Band(evil, [("r0", evil), None], evil, 0)], evil)
    line = line_chart(["a", "b"], [Line(evil, [1.5, None])], "s<", evil)
    for svg in (strip, line):
        assert "<script" not in svg and RLO not in svg and "&lt;script&gt;" in svg
        assert "\\u202e" in svg
    assert strip == strip_chart(
        ["run <1>", "run 2"], [Band(evil, [("r0", evil), None], evil, 0)], evil
    )
    assert step_chart([Step(evil, evil, 1, 0)], evil).count("&lt;script&gt;") == 5


# -- the build page, titles, bidirectional controls ----------------------------------------------

REAL_META = {
    "built_at": "2026-12-07T14:37:26Z",
    "ccache": {"hits": 1556, "misses": 33},
    "commit": "31ce4e85d3dcccae3b13ce091911697035df69f0",
    "duration_s": 69.04,
    "jobs": 2,
    "kernel_release": "6.1.192+",
    "key": "314e57b75f941c65fb0a6f47",
    "patch_hash": "",
    "profile": "xen-dom0",
    "profile_identity": {
        "arch": "x86_64",
        "base": "tinyconfig",
        "fragments": ["aba1b24a1cbcbf81fa207a8f200185583fe6239a36b15d64e2aa529c644d1ad5"],
        "targets": ["bzImage", "modules"],
    },
    "rebuilt_count": 1398,
    "rebuilt_objects": [f"arch/x86/kernel/f{i}.o" for i in range(150)]
    + [f"drivers/xen/g{i}.o" for i in range(50)],
    "revision": "v6.1.192-3",
    "sizes": {"bzImage": 2_202_010, "config": 28_001, "modules": 310_000},
    "toolchain": "gcc (Debian 12.2.0-14+deb12u1) 12.2.0 / GNU Make 4.3",
    "tree": "debian-6.1",
    "tree_id": "597284f8dd5cc503abab1b9e94d4dc4e92bc8931",
    "variant": "gntdev-numa/vm-mixedmap",
}


def test_the_build_page_shows_facts_and_collapses_the_rebuilt_objects(built: Built) -> None:
    built.store.record_build(BuildRecord(BUILD_KEY, "built", "builds/build.log", meta=REAL_META))
    render_site(built.store)
    page = (built.results / "site" / f"build/{BUILD_KEY}.html").read_text()
    assert _title(page) == "build · v6.1.192-3 · gntdev-numa/vm-mixedmap · xen-dom0 &#183; kbisect"
    for fact in (
        '<th>profile</th><td class="mono">xen-dom0</td>',
        "1: aba1b24a1cbc",
        "gcc (Debian 12.2.0-14+deb12u1) 12.2.0",
        "69 s (1.2 min) with 2 jobs",
        "98 % hits (1556 hits, 33 misses)",
        "bzImage 2.1 MiB, config 27.3 KiB, modules 302.7 KiB",
        "<th>tree_id</th>",  # what the page does not know is still there, as a row
    ):
        assert fact in page, fact
    summary = page.split("<details><summary>")[1].split("</summary>")[0]
    assert summary == "1398 objects (200 listed): arch/x86 150, drivers/xen 50"
    assert "rebuilt_objects" not in page and "<details open" not in page.split("Rebuilt")[1][:200]


def test_bidirectional_overrides_are_neutralized_on_every_page(built: Built) -> None:
    assert visible(f"a{RLO}b\u2066c\u200fd") == "a\\u202eb\\u2066c\\u200fd"
    report = built.store.get_bisection(built.bisection).report
    assert report is not None
    report["culprit"]["subject"] = f"gntdev: fix {RLO}exe.txt"
    built.store.finish_bisection(built.bisection, "confirmed", report)
    cell = built.store.cells(built.runs[1])[0]
    subtests = (SubtestRecord(f"odirect{RLO}-read", ResultStatus.FAIL, 14, f"Bad {RLO}address"),)
    built.store.record_cell(
        built.runs[1], CellRecord(**{**cell.__dict__, "subtests": subtests, "id": None})
    )
    render_site(built.store)
    got = pages(built.results / "site")
    for name, html in got.items():
        assert RLO not in html and "\u2066" not in html, name
    bisection = got[f"bisect/{built.bisection}.html"]
    assert "gntdev: fix \\u202eexe.txt" in bisection
    assert any("odirect\\u202e-read" in html for html in got.values())
