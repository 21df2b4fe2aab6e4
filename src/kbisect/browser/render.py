"""The static site: rendering the results store into pages, incrementally.

Layout of the site directory (``results/site`` by default)::

    index.html                 runs and bisections, newest first; open regressions
    run/RUN/index.html         a run: the matrix (revision x variant by host x job), filter
    run/RUN/rev-REV-H.html     variants by subtest at one revision
    run/RUN/diff.html          the run against its baseline
    run/RUN/cell-CELL.html     a cell: subtests, evidence, logs, fingerprint, history
    lines/H.html               a cell line (tree, variant, profile, host, job): its newest runs
    lines/H-N.html             the same, runs (N-1)*100+1 to N*100 (full blocks only)
    log/H-N.html               page N of a long log (LOG_PAGE_LINES lines a page)
    build/KEY.html             a build and its log
    bisect/ID.html             a bisection: steps, culprit and validation, runs, bisect log
    findings/NAME.html         an experiment's findings over all its runs (`kbisect report`)
    diff/A-B.html              `results.diff A B`
    .manifest.json             what was rendered from what (see below)

Links between pages and to the raw files are relative, so the site works from file:// and from
any web server that serves the results directory.

Incremental: every run has a key over its own content signature in the store (its record, and
count, largest id and id sum of its cells and of its changes: a re-recorded cell gets a new id),
its baseline's signature, the signatures of the HISTORY_RUNS - 1 runs before it (its cells'
history), its regressions, and the layout (kbisect version, templates, limits). A run whose key is
in the manifest is neither read nor rendered. Line, build, bisection and long-log pages have keys
of their own; the index is rendered every time. A page that is rendered is written only when its
bytes differ from the file's, so a render's report lists exactly the pages that changed. Log files
of a run are read when the run is rendered; `--full` re-reads and re-renders everything (and still
writes only what changed).

The order of a render, and where each family of pages is rendered: the runs' pages (runs.py:
cellpage, runpage and diff; in worker processes when there are many), then the line pages
(lines), build pages (builds), bisection pages (bisection) and the index (index). The manifest is
in manifest.py; the page writer and the log views in site.py.
"""

from __future__ import annotations

import itertools
import multiprocessing
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from kbisect.browser.bisection import render_bisections, shown_bisections
from kbisect.browser.builds import render_builds
from kbisect.browser.expect import Expectations
from kbisect.browser.findings_page import findings_links, render_findings
from kbisect.browser.index import render_index
from kbisect.browser.lines import render_lines
from kbisect.browser.manifest import MANIFEST, Manifest
from kbisect.browser.pages import (
    HISTORY_RUNS,
    SITE_DIR,
    environment,
    key_of,
    layout_key,
    log_page,
    when,
    without_cyclic_gc,
)
from kbisect.browser.runpage import RunJob
from kbisect.browser.runs import Chunk, ChunkResult, render_chunk
from kbisect.browser.site import (
    LogFacts,
    Site,
    remove_stale,
    remove_stale_dirs,
    remove_unreferenced,
)
from kbisect.browser.trends import render_trends
from kbisect.config.model import Experiment
from kbisect.results.model import RegressionRecord, RunRecord, RunStatus
from kbisect.results.store import ResultsStore

PARALLEL_MIN_RUNS = 24
"""Fewer runs to render than this are rendered in this process (no worker start-up)."""


@dataclass
class RenderReport:
    """What a render did."""

    site: Path
    written: list[str] = field(default_factory=list)
    """Pages (and the stylesheet) written, relative to the site directory."""
    unchanged: int = 0
    """Pages rendered again to the bytes they had (not written)."""
    skipped: int = 0
    """Pages not rendered at all: their inputs had not changed."""
    removed: list[str] = field(default_factory=list)
    runs: list[int] = field(default_factory=list)
    """Runs whose pages were rendered."""
    largest: tuple[str, int] = ("", 0)
    """The largest page rendered (relative path, bytes)."""
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"{len(self.written)} pages written, {self.unchanged} unchanged, "
            f"{self.skipped} not rendered (inputs unchanged), {len(self.removed)} removed; "
            f"{len(self.runs)} runs rendered in {self.seconds:.2f} s"
        )

    def add(self, written: list[str], unchanged: int, largest: tuple[str, int]) -> None:
        """What a page writer (this process's or a worker's) did."""
        self.written += written
        self.unchanged += unchanged
        if largest[1] > self.largest[1]:
            self.largest = largest


def render_site(
    store: ResultsStore,
    out: Path | None = None,
    *,
    full: bool = False,
    jobs: int = 1,
    expectations: Expectations | None = None,
    experiments: Mapping[str, Experiment] | None = None,
) -> RenderReport:
    """Render the store into ``out`` (default ``results/site``): only what changed since the
    last render (everything with ``full``), in up to ``jobs`` processes. ``expectations``: what
    the experiments' variants are expected to do (``expect.expectations_of(project.experiments)``),
    shown against what was observed. ``experiments`` (the project's, by name): a findings page
    for each one that has results."""
    with without_cyclic_gc():
        return _render_site(store, out, full, jobs, dict(expectations or {}), experiments or {})


def _render_site(
    store: ResultsStore,
    out: Path | None,
    full: bool,
    jobs: int,
    expectations: Expectations,
    experiments: Mapping[str, Experiment],
) -> RenderReport:
    started_at = time.perf_counter()
    site_dir = out if out is not None else store.results_dir / SITE_DIR
    site_dir.mkdir(parents=True, exist_ok=True)
    render = _SiteRender(store, site_dir, full, expectations)
    render.experiments = experiments
    facts = render.render_runs(render.runs_to_render(), jobs)
    render.render_pages(facts)
    render.manifest.save()
    render.report.seconds = time.perf_counter() - started_at
    return render.report


class _SiteRender:
    """One render of the site: what the store has, and what the manifest says was rendered."""

    def __init__(
        self, store: ResultsStore, site_dir: Path, full: bool, expectations: Expectations
    ) -> None:
        self.store = store
        self.site_dir = site_dir
        self.report = RenderReport(site_dir)
        self.env = environment()
        self.expectations = expectations
        self.experiments: Mapping[str, Experiment] = {}
        # the expectations shape run pages as the templates do: a change re-renders them
        self.layout = key_of(layout_key(self.env), sorted(expectations.items()))
        # the manifest belongs to one store: another one (--out shared) starts from nothing
        identity = key_of(self.layout, str(store.path.resolve()))
        self.manifest = Manifest(site_dir / MANIFEST, "" if full else identity)
        self.manifest.layout = identity
        self.runs = list(reversed(store.runs()))  # oldest first
        self.sigs, self.build_sigs = store.signatures(self.manifest.marks)
        ids = {str(r.id) for r in self.runs}
        marks = self.manifest.marks
        marks["runs"] = {k: v for k, v in marks["runs"].items() if k in ids}
        self.regressions = store.regressions()
        self.bisections = shown_bisections(store)  # interrupted ones as such, not running
        self.started = {r.id: when(r.started) for r in self.runs}
        self.window_part = {
            r.id: f"{r.id}:{self.sigs.get(r.id, '')}:{self.started[r.id]}" for r in self.runs
        }
        """What a page that shows a run's history entries depends on, by run."""

    # -- run pages -----------------------------------------------------------------------------

    def runs_to_render(self) -> list[RunJob]:
        """The runs whose key is not the manifest's (the pages of the others count as skipped)."""
        runs = self.runs
        baselines = _baselines(runs)
        by_run: dict[int, list[RegressionRecord]] = {}
        for reg in self.regressions:
            for run_id in {reg.opened_run, reg.fixed_run}:
                if run_id is not None:
                    by_run.setdefault(run_id, []).append(reg)
        todo: list[RunJob] = []
        for i, run in enumerate(runs):
            base = baselines[run.id]
            window = [r.id for r in runs[max(0, i - HISTORY_RUNS + 1) : i]]
            mine = by_run.get(run.id, [])
            key = self._run_key(run, base, window, mine)
            known = self.manifest.runs.get(str(run.id))
            if known is not None and known["key"] == key:
                self.report.skipped += known["pages"]
                continue
            previous = runs[i - 1].id if i else None
            todo.append(RunJob(run, key, base, previous, window, mine))
        return todo

    def _run_key(
        self,
        run: RunRecord,
        base: RunRecord | None,
        window: list[int],
        regressions: list[RegressionRecord],
    ) -> str:
        sigs = self.sigs
        return key_of(
            self.layout,
            _fields(run),
            sigs.get(run.id, ""),
            f"{_fields(base)}{sigs.get(base.id, '')}" if base else "",
            "|".join(self.window_part[q] for q in window),
            repr(regressions),
        )

    def render_runs(self, todo: list[RunJob], jobs: int) -> dict[tuple[str, str], LogFacts]:
        """Render the pages of the runs in ``todo`` in up to ``jobs`` processes, and drop the
        runs the store no longer has; what the workers learnt of paged logs."""
        manifest = self.manifest
        rendering = {job.run.id for job in todo}
        wanted: set[int] = set()
        for job in todo:
            wanted.update(q for q in job.window if q not in rendering)
            if job.baseline is not None and job.baseline.id not in rendering:
                wanted.add(job.baseline.id)
        context = {q: manifest.entries(q) for q in wanted if str(q) in manifest.runs}
        parts = min(max(1, jobs), max(1, len(todo) // PARALLEL_MIN_RUNS))
        results_dir, logs = self.store.results_dir, dict(manifest.logs)
        chunks = [
            Chunk(results_dir, self.site_dir, part, self.started, context, logs, self.expectations)
            for part in (_split(todo, parts) if todo else [])
        ]
        if len(chunks) > 1:
            ctx = multiprocessing.get_context(_start_method())
            with ProcessPoolExecutor(max_workers=len(chunks), mp_context=ctx) as executor:
                results = list(executor.map(render_chunk, chunks))
        else:
            results = [render_chunk(chunk) for chunk in chunks]
        facts: dict[tuple[str, str], LogFacts] = {}
        for result in results:
            facts.update(result.log_facts)
            self._record(result)
        present = {str(r.id) for r in self.runs}
        for gone in [k for k in manifest.runs if k not in present]:
            del manifest.runs[gone]
        remove_stale_dirs(self.site_dir / "run", present, self.report.removed)
        return facts

    def _record(self, result: ChunkResult) -> None:
        """What a chunk rendered, into the report and the manifest."""
        manifest = self.manifest
        self.report.add(result.written, result.unchanged, result.largest)
        self.report.removed += result.removed
        manifest.logs.update(result.log_keys)
        for r in result.runs:
            self.report.runs.append(r.run_id)
            packed, line_indices = manifest.pack(r.run_id, r.entries)
            manifest.runs[str(r.run_id)] = {
                "key": r.key,
                "summary": r.summary,
                "entries": packed,
                "lines": line_indices,
                "pages": r.pages,
                "builds": r.builds,
                "logs": r.logs,
            }

    # -- pages over all runs -------------------------------------------------------------------

    def render_pages(self, facts: dict[tuple[str, str], LogFacts]) -> None:
        """Lines, builds and bisections whose keys changed, then the index; the pages nothing
        refers to any more are removed."""
        manifest, report = self.manifest, self.report
        site = Site(self.site_dir, self.store.results_dir, self.env)
        site.known_logs = dict(manifest.logs)
        site.learn(facts)
        site.emit("style.css", self.env.get_template("style.css.j2").render())
        layout, store = self.layout, self.store
        report.skipped += render_lines(
            site, manifest, layout, self.runs, self.started, self.window_part
        )
        report.skipped += render_builds(site, store, manifest, layout, self.build_sigs)
        report.skipped += render_bisections(site, store, manifest, layout, self.bisections)
        self._remove_unreferenced(site)
        trends = render_trends(site, manifest, self.runs, store.build_seconds())
        keep = {page.split("/")[1] for _, page, _ in trends}
        remove_stale(self.site_dir / "trends", keep, report.removed, "trends/")
        report.skipped += render_findings(
            site, store, manifest, layout, self.experiments, self.sigs, report.removed
        )
        render_index(
            site,
            manifest,
            self.runs,
            self.started,
            self.bisections,
            self.regressions,
            trends,
            findings_links(manifest),
        )
        report.add(site.out.written, site.out.unchanged, site.out.largest)

    def _remove_unreferenced(self, site: Site) -> None:
        """Forget the long logs nothing refers to, and remove their pages and the line, build
        and bisection pages that are not in the manifest."""
        manifest, removed = self.manifest, self.report.removed
        referenced_logs: set[str] = set()
        for entry in [
            *manifest.runs.values(),
            *manifest.builds.values(),
            *manifest.bisections.values(),
        ]:
            referenced_logs.update(entry["logs"])
        manifest.logs.update(site.log_keys)
        manifest.logs = {k: v for k, v in manifest.logs.items() if k in referenced_logs}
        prefixes = {log_page(k, 1).split("/")[1].rsplit("-", 1)[0] for k in manifest.logs}
        remove_unreferenced(self.site_dir / "log", prefixes, removed)
        lines = {relative.split("/")[1] for relative in manifest.line_keys}
        remove_stale(self.site_dir / "lines", lines, removed, "lines/")
        builds = {f"{build}.html" for build in manifest.builds}
        remove_stale(self.site_dir / "build", builds, removed, "build/")
        bisections = {f"{b}.html" for b in manifest.bisections}
        remove_stale(self.site_dir / "bisect", bisections, removed, "bisect/")


def _baselines(runs: list[RunRecord]) -> dict[int, RunRecord | None]:
    """The run each run is compared with: the latest-started finished run of the same kind and
    pipeline with a smaller id (kbisect.pipeline.regressions.classify_run's rule)."""
    if all(a.id < b.id for a, b in itertools.pairwise(runs)):  # the usual case: one pass
        last: dict[tuple[str, str | None], RunRecord] = {}
        found: dict[int, RunRecord | None] = {}
        for run in runs:
            found[run.id] = last.get((run.kind, run.pipeline))
            if run.status is RunStatus.FINISHED:
                last[(run.kind, run.pipeline)] = run
        return found
    out: dict[int, RunRecord | None] = {}
    for run in runs:
        candidates = [
            r
            for r in runs
            if r.id < run.id
            and r.kind == run.kind
            and r.pipeline == run.pipeline
            and r.status is RunStatus.FINISHED
        ]
        out[run.id] = max(candidates, key=lambda r: (r.started, r.id)) if candidates else None
    return out


def _fields(run: RunRecord) -> str:
    return repr((run.id, run.kind, run.pipeline, run.started, run.finished, run.status, run.meta))


def _split(jobs: list[RunJob], parts: int) -> list[list[RunJob]]:
    size = -(-len(jobs) // parts)
    return [jobs[i : i + size] for i in range(0, len(jobs), size)]


def _start_method() -> str:
    """fork when it is safe (one thread: nothing holds a lock; the workers exit with os._exit,
    so the store connection they inherit is never touched), else spawn."""
    methods = multiprocessing.get_all_start_methods()
    return "fork" if "fork" in methods and threading.active_count() == 1 else "spawn"
