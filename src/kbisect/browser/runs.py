"""Rendering runs in one process (a worker's, or the caller's): each run's cell pages, run page,
revision pages and diff against its baseline, reading the store a batch of runs at a time."""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markupsafe import Markup

from kbisect.browser.cellpage import CellPages
from kbisect.browser.diff import diff_pools, render_diff_page
from kbisect.browser.expect import Expectations
from kbisect.browser.fragments import text
from kbisect.browser.history import Entry, History
from kbisect.browser.pages import when, without_cyclic_gc
from kbisect.browser.runpage import (
    RunJob,
    pool_of,
    render_rev_pages,
    render_run_page,
    summary_of,
)
from kbisect.browser.site import LogFacts, Site, remove_stale
from kbisect.browser.trends import trend_of, trend_page
from kbisect.browser.verdict import run_verdict
from kbisect.pipeline.regressions import Pool
from kbisect.results.model import CellRecord, Change, ChangeRecord, SubtestKey
from kbisect.results.store import ResultsStore

READ_RUNS = 16
"""Runs whose cells and changes are read from the store together."""


@dataclass
class Chunk:
    """Runs for one process to render, and what it needs to know of the others."""

    results_dir: Path
    site: Path
    jobs: list[RunJob]
    started: dict[int, str]
    context: dict[int, list[Entry]]
    """History entries of runs that are not rendered now (from the manifest)."""
    known_logs: dict[str, str]
    expectations: Expectations = field(default_factory=dict)
    """What the experiments' variants are expected to do (kbisect.browser.expect)."""


@dataclass
class RunResult:
    run_id: int
    key: str
    summary: dict[str, Any]
    entries: list[Entry]
    pages: int
    builds: list[str]
    logs: list[str]


@dataclass
class ChunkResult:
    runs: list[RunResult]
    written: list[str]
    unchanged: int
    removed: list[str]
    largest: tuple[str, int]
    log_keys: dict[str, str]
    log_facts: dict[tuple[str, str], LogFacts]
    """What the chunk learnt of paged logs (build logs), so that build pages need not read them
    again."""


class RunRenderer:
    """Renders the pages of runs, one after the other, in one process."""

    def __init__(self, store: ResultsStore, site: Site, chunk: Chunk) -> None:
        self.store = store
        self.site = site
        self.chunk = chunk
        self.history = History(store.cells, site, chunk.started, chunk.context)
        self.cells = CellPages(site, self.history)
        self.pools: dict[int, dict[SubtestKey, Pool]] = {}
        self.fetched: dict[int, tuple[list[CellRecord], list[ChangeRecord]]] = {}
        """Cells and changes of the runs to render next, read together."""
        self.removed: list[str] = []

    def pools_of(self, run_id: int) -> dict[SubtestKey, Pool]:
        found = self.pools.get(run_id)
        if found is None:
            found = pool_of(self.store.cells(run_id))
        return found

    def render(self, job: RunJob) -> RunResult:
        run = job.run
        site = self.site
        fetched = self.fetched.pop(run.id, None)
        if fetched is None:
            cells, changes = self.store.cells(run.id), self.store.changes(run.id)
        else:
            cells, changes = fetched
        if job.baseline is None:  # nothing to be new against: not 104 rows NEW on a first run
            changes = [ch for ch in changes if ch.change != Change.NEW]
        self.history.add(run.id, cells)
        site.rendered = set()
        site.paged_logs = set()
        base = f"run/{run.id}/"
        junit = site.file_link(base + "index.html", f"runs/{run.id}/junit.xml")
        builds = self._cell_pages(job, cells, changes, junit)
        summary = summary_of(cells, changes)
        pools = pool_of(cells)
        summary["trend"] = trend_of(pools, cells)
        expectations = self.chunk.expectations
        verdict = run_verdict(cells, changes, pools, expectations)
        trends = "../../" + trend_page(run.kind, run.pipeline)
        link = Markup(f'<p><a href="{text(trends)}">trends of this pipeline</a></p>\n')  # noqa: S704
        render_run_page(site, job, cells, changes, summary["counts"], junit, verdict, link)
        render_rev_pages(site, run, cells, pools, expectations)
        if job.baseline is not None:
            d = diff_pools(job.baseline, run, self.pools_of(job.baseline.id), pools)
            render_diff_page(site, base + "diff.html", d, self.history)
        self.pools = {run.id: pools}
        pages = {p for p in site.rendered if p.startswith(base)}
        remove_stale(site.site / base, {p[len(base) :] for p in pages}, self.removed, base)
        return RunResult(
            run.id,
            job.key,
            summary,
            self.history.entries[run.id],
            len(pages),
            sorted(builds),
            sorted(site.paged_logs),
        )

    def _cell_pages(
        self,
        job: RunJob,
        cells: list[CellRecord],
        changes: list[ChangeRecord],
        junit: str | None,
    ) -> set[str]:
        """The run's cell pages; the builds they refer to."""
        run = job.run
        classes_by_cell: dict[tuple[str, ...], dict[str, str]] = {}
        for ch in changes:
            k = ch.key
            classes_by_cell.setdefault(k[:6], {})[k.subtest] = ch.change
        run_started = self.chunk.started.get(run.id) or when(run.started)
        history_runs = [*job.window, run.id]
        builds: set[str] = set()
        for c in cells:
            if c.build_key:
                builds.add(c.build_key)
            classes = classes_by_cell.get((c.tree, c.rev, c.variant, c.profile, c.host, c.job), {})
            self.cells.render(run, run_started, c, classes, history_runs, junit)
        return builds


def render_chunk(chunk: Chunk) -> ChunkResult:
    """Render a list of runs (in a worker process or in this one)."""
    # the collector's full passes over the caches would cost a tenth of the time: only young
    # objects are collected, once a batch of runs
    with without_cyclic_gc():
        return _render_chunk(chunk)


def _render_chunk(chunk: Chunk) -> ChunkResult:
    with ResultsStore(chunk.results_dir) as store:
        site = Site(chunk.site, chunk.results_dir)
        site.known_logs = chunk.known_logs
        renderer = RunRenderer(store, site, chunk)
        results = []
        for start in range(0, len(chunk.jobs), READ_RUNS):
            batch = [job.run.id for job in chunk.jobs[start : start + READ_RUNS]]
            cells, changes = store.cells_of_runs(batch), store.changes_of_runs(batch)
            renderer.fetched = {run_id: (cells[run_id], changes[run_id]) for run_id in batch}
            results += [renderer.render(job) for job in chunk.jobs[start : start + READ_RUNS]]
            gc.collect(1)
    return ChunkResult(
        results,
        site.out.written,
        site.out.unchanged,
        renderer.removed,
        site.out.largest,
        site.log_keys,
        site.paged_facts(),
    )
