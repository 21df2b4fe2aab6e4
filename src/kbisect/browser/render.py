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
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import multiprocessing
import os
import shutil
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markupsafe import Markup

from kbisect.browser.cellpage import CellParts, cell_html
from kbisect.browser.diff import RunDiff, diff_cells, diff_pools
from kbisect.browser.fragments import (
    diff_rows,
    matrix_rows,
    notable_rows,
    run_row,
    variant_cells,
    variant_rows,
)
from kbisect.browser.history import Entry, entries_of
from kbisect.browser.pages import (
    CLASS_ORDER,
    HISTORY_RUNS,
    STATUSES,
    cell_page,
    environment,
    key_of,
    layout_key,
    line_block,
    line_page,
    log_page,
    meta_items,
    rev_page,
    when,
)
from kbisect.browser.runpage import (
    matrix,
    notable_changes,
    pool_of,
    summary_of,
    variant_table_of,
)
from kbisect.browser.safety import safe_file
from kbisect.browser.site import LogFacts, LogView, Site
from kbisect.errors import UserError
from kbisect.pipeline.regressions import Pool
from kbisect.results.model import (
    BisectionRecord,
    CellRecord,
    ChangeRecord,
    LogKind,
    RegressionRecord,
    RunRecord,
    RunStatus,
    SubtestKey,
)
from kbisect.results.store import ResultsStore

SITE_DIR = "site"
MANIFEST = ".manifest.json"
MANIFEST_FORMAT = 2
LINE_PAGE_RUNS = 100
"""A line's page shows its newest this many runs; older ones are in pages of this many."""
READ_RUNS = 16
"""Runs whose cells and changes are read from the store together."""
PARALLEL_MIN_RUNS = 24
"""Fewer runs to render than this are rendered in this process (no worker start-up)."""
OWN_DIRS = ("run", "lines", "log", "build", "bisect")
"""Directories of the site whose pages a render removes when nothing refers to them any more
(diff/, written by `results.diff`, is left alone)."""


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


# -- work for one process ------------------------------------------------------------------------


@dataclass
class RunJob:
    run: RunRecord
    key: str
    baseline: RunRecord | None
    previous: int | None
    window: list[int]
    """Earlier runs whose cells the history on this run's cell pages shows, oldest first."""
    regressions: list[RegressionRecord]


@dataclass
class Chunk:
    results_dir: Path
    site: Path
    jobs: list[RunJob]
    started: dict[int, str]
    context: dict[int, list[Entry]]
    """History entries of runs that are not rendered now (from the manifest)."""
    known_logs: dict[str, str]


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


def _remove_stale(folder: Path, keep: set[str], removed: list[str], prefix: str) -> None:
    """Remove the pages in ``folder`` that are not in ``keep`` (names)."""
    try:
        names = os.listdir(folder)  # noqa: PTH208 (names only: once a run)
    except OSError:
        return
    for name in names:
        if name.endswith(".html") and name not in keep:
            with contextlib.suppress(FileNotFoundError):
                (folder / name).unlink()
                removed.append(prefix + name)


class _RunRenderer:
    """Renders the pages of runs, one after the other, in one process."""

    def __init__(self, store: ResultsStore, site: Site, chunk: Chunk) -> None:
        self.store = store
        self.site = site
        self.chunk = chunk
        self.entries: dict[int, list[Entry]] = dict(chunk.context)
        self.lines: dict[int, dict[tuple[str, ...], list[tuple[str, list[list[Any]]]]]] = {}
        self.pools: dict[int, dict[SubtestKey, Pool]] = {}
        self._histories: dict[tuple[int, tuple[str, ...]], str] = {}
        self._run_rows: dict[tuple[int, tuple[str, ...]], tuple[list[str], list[str]]] = {}
        self.parts = CellParts()
        self._line_links: dict[tuple[str, ...], str] = {}
        self.fetched: dict[int, tuple[list[CellRecord], list[ChangeRecord]]] = {}
        """Cells and changes of the runs to render next, read together."""
        self.removed: list[str] = []

    def entries_of(self, run_id: int) -> list[Entry]:
        if run_id not in self.entries:
            self.entries[run_id] = entries_of(self.store.cells(run_id))
        return self.entries[run_id]

    def lines_of(self, run_id: int) -> dict[tuple[str, ...], list[tuple[str, list[list[Any]]]]]:
        found = self.lines.get(run_id)
        if found is None:
            found = {}
            for line, rev, cells in self.entries_of(run_id):
                found.setdefault(tuple(line), []).append((rev, cells))
            self.lines[run_id] = found
            if len(self.lines) > 4 * HISTORY_RUNS:
                self.lines.pop(next(iter(self.lines)))
        return found

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
        self.entries[run.id] = entries_of(cells)
        self.lines.pop(run.id, None)
        site.rendered = set()
        site.paged_logs = set()
        base = f"run/{run.id}/"
        junit_rel = f"runs/{run.id}/junit.xml"
        first_cell: dict[tuple[str, ...], int] = {}
        for c in cells:
            assert c.id is not None
            first_cell.setdefault((c.tree, c.rev, c.variant, c.profile, c.host, c.job), c.id)
        classes_by_cell: dict[tuple[str, ...], dict[str, str]] = {}
        for ch in changes:
            k = ch.key
            classes_by_cell.setdefault(k[:6], {})[k.subtest] = ch.change
        junit = site.file_link(base + "index.html", junit_rel)
        history_runs = [*job.window, run.id]
        builds: set[str] = set()
        for c in cells:
            assert c.id is not None
            page = cell_page(run.id, c.id)
            if c.build_key:
                builds.add(c.build_key)
            self._cell(page, run, c, classes_by_cell, history_runs, junit)
        columns, rows = matrix(cells, changes)
        revs = list(dict.fromkeys((c.tree, c.rev) for c in cells))
        rev_pages = [
            (
                rev if len({t for t, _ in revs}) == 1 else f"{tree}:{rev}",
                rev_page(run.id, tree, rev),
            )
            for tree, rev in revs
        ]
        notable, more = notable_changes(changes, first_cell.get)
        baseline = job.baseline
        summary = summary_of(cells, changes)
        site.render(
            "run.html.j2",
            base + "index.html",
            run=run,
            meta=meta_items(run.meta),
            counts=summary["counts"],
            baseline=baseline.id if baseline else None,
            previous=job.previous,
            rev_pages=[(label, link.split("/")[-1]) for label, link in rev_pages],
            junit=junit,
            regressions=job.regressions,
            statuses=STATUSES,
            classes=CLASS_ORDER,
            columns=columns,
            matrix_rows=matrix_rows(rows),
            notable=notable,
            notable_rows=notable_rows(notable),
            notable_more=more,
            script=site.script,
        )
        pools = pool_of(cells)
        pools_at: dict[tuple[str, str], dict[SubtestKey, Pool]] = {}
        for k, p in pools.items():
            pools_at.setdefault((k[0], k[1]), {})[k] = p
        for tree, rev in revs:
            relative = rev_page(run.id, tree, rev)
            at_rev = [c for c in cells if c.tree == tree and c.rev == rev]
            mine = pools_at.get((tree, rev), {})
            variants, subtests, table = variant_table_of(mine, at_rev, tree, rev)
            by_variant: dict[str, list[CellRecord]] = {}
            for c in at_rev:
                by_variant.setdefault(c.variant, []).append(c)
            site.render(
                "variants.html.j2",
                relative,
                run=run,
                tree=tree,
                rev=rev,
                variants=variants,
                rows=variant_rows(variants, subtests, table),
                cell_rows=variant_cells(variants, by_variant),
            )
        if baseline is not None:
            d = diff_pools(baseline, run, self.pools_of(baseline.id), pools)
            self._diff(base + "diff.html", d)
        self.pools = {run.id: pools}
        pages = {p for p in site.rendered if p.startswith(base)}
        _remove_stale(site.site / base, {p[len(base) :] for p in pages}, self.removed, base)
        return RunResult(
            run.id,
            job.key,
            summary,
            self.entries[run.id],
            len(pages),
            sorted(builds),
            sorted(site.paged_logs),
        )

    def _diff(self, relative: str, d: RunDiff) -> None:
        root = "../" * relative.count("/")

        def cell_link(run_id: int, line: tuple[str, ...], rev: str | None) -> str | None:
            if rev is None:
                return None
            for cells in self.lines_of(run_id).get(tuple(line[:5]), []):
                if cells[0] == rev and cells[1]:
                    return f"{root}{cell_page(run_id, cells[1][0][0])}"
            return None

        self.site.render(
            "diff.html.j2",
            relative,
            d=d,
            run_link=lambda run_id: f"{root}run/{run_id}/index.html",
            changed_rows=diff_rows(d, cell_link),
        )

    def _history(self, line: tuple[str, ...], run_id: int, runs: list[int]) -> str:
        """The rows of a cell page's history: the same for every cell of the line in a run."""
        key = (run_id, line)
        found = self._histories.get(key)
        if found is None:
            rows = []
            for q in reversed(runs[-HISTORY_RUNS:]):
                rows += self._history_rows(q, line)[1 if q == run_id else 0]
            found = "\n".join(rows)
            self._histories = {k: v for k, v in self._histories.items() if k[0] == run_id}
            self._histories[key] = found
        return found

    def _history_rows(self, run_id: int, line: tuple[str, ...]) -> tuple[list[str], list[str]]:
        """A run's rows in the history of a line, newest revision first: as an earlier run's,
        and as the current one's (the same rows on the cell pages of up to HISTORY_RUNS runs)."""
        key = (run_id, line)
        found = self._run_rows.get(key)
        if found is None:
            started = self.chunk.started.get(run_id, "-")
            cells = [
                self.site.history_row("../../", run_id, started, rev, repeats)
                for rev, repeats in reversed(self.lines_of(run_id).get(line, []))
            ]
            found = (
                [f"<tr>{c}</tr>" for c in cells],
                [f'<tr class="current">{c}</tr>' for c in cells],
            )
            if len(self._run_rows) > 50_000:
                self._run_rows.clear()
            self._run_rows[key] = found
        return found

    def _cell(
        self,
        page: str,
        run: RunRecord,
        c: CellRecord,
        classes_by_cell: dict[tuple[str, ...], dict[str, str]],
        history_runs: list[int],
        junit: str | None,
    ) -> None:
        site = self.site
        views: list[LogView] = []
        seen: dict[str, int] = {}
        junit_links = []
        for ref in c.logs:
            kind = ref.kind.value
            if ref.kind is LogKind.JUNIT:
                link = site.file_link(page, ref.path)
                if link:
                    junit_links.append(link)
                continue
            seen[kind] = seen.get(kind, 0) + 1
            anchor = kind if seen[kind] == 1 else f"{kind}-{seen[kind]}"
            views.append(site.log_view(page, kind, ref.path, anchor))
        evidence = []
        for e in c.evidence:
            view = next((v for v in views if v.kind == e.source.value), None)
            evidence.append((e, view.line_link(e.line) if view else None))
        line = (c.tree, c.variant, c.profile, c.host, c.job)
        history = self._history(line, run.id, history_runs)
        classes = classes_by_cell.get((c.tree, c.rev, *line[1:]), {})
        line_link = self._line_links.get(line)
        if line_link is None:
            if len(self._line_links) > 100_000:
                self._line_links.clear()
            line_link = self._line_links[line] = "../../" + line_page(line)
        seconds = (
            round((c.finished - c.started).total_seconds(), 1) if c.started and c.finished else None
        )
        site.emit(
            page,
            cell_html(
                self.parts,
                csp_script=site.csp_script,
                run=run,
                run_started=self.chunk.started.get(run.id) or when(run.started),
                cell=c,
                classes=classes,
                evidence=evidence,
                logs=views,
                build_link=f"../../build/{c.build_key}.html" if c.build_key else "",
                junit=junit_links[0] if junit_links else junit,
                seconds=seconds,
                history=history,
                history_runs=HISTORY_RUNS,
                line_link=line_link,
                started=when(c.started),
                finished=when(c.finished),
            ),
        )


def render_chunk(chunk: Chunk) -> ChunkResult:
    """Render a list of runs (in a worker process or in this one)."""
    # The caches of a render (fragments, history rows, log facts) are hundreds of thousands of
    # objects that live until the end: the cyclic collector's full passes over them cost a
    # tenth of the time. Only young objects are collected, once a batch of runs.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _render_chunk(chunk)
    finally:
        if collecting:
            gc.enable()


def _render_chunk(chunk: Chunk) -> ChunkResult:
    with ResultsStore(chunk.results_dir) as store:
        site = Site(chunk.site, chunk.results_dir)
        site.known_logs = chunk.known_logs
        renderer = _RunRenderer(store, site, chunk)
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


# -- the whole site ------------------------------------------------------------------------------


class Manifest:
    """What the last render made from what (``.manifest.json`` in the site directory)."""

    def __init__(self, path: Path, layout: str) -> None:
        self.path = path
        self.layout = layout
        self.runs: dict[str, dict[str, Any]] = {}
        self.lines: list[list[str]] = []
        """Cell lines, so that run entries can name theirs by index."""
        self.logs: dict[str, str] = {}
        self.line_keys: dict[str, str] = {}
        self.builds: dict[str, dict[str, Any]] = {}
        self.bisections: dict[str, dict[str, Any]] = {}
        self._index: dict[tuple[str, ...], int] = {}
        self._unpacked: dict[int, list[list[Any]]] = {}
        self.marks: dict[str, Any] = {}
        """Largest cell id and changes rowid seen, and every run's signature (store.signatures)."""
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        if (
            not isinstance(data, dict)
            or data.get("format") != MANIFEST_FORMAT
            or data.get("layout") != layout
        ):
            return
        self.runs = data["runs"]
        self.lines = data["lines"]
        self.logs = data["logs"]
        self.line_keys = data["line_keys"]
        self.builds = data["builds"]
        self.bisections = data["bisections"]
        self.marks = data["marks"]
        self._index = {tuple(line): i for i, line in enumerate(self.lines)}

    def packed_entries(self, run_id: int) -> list[list[Any]]:
        """A run's entries with lines by index (kept as a JSON string: most renders need the
        entries of a few runs only, and decoding all of them would cost more than the rest)."""
        found = self._unpacked.get(run_id)
        if found is None:
            found = self._unpacked[run_id] = json.loads(self.runs[str(run_id)]["entries"])
        return found

    def entries(self, run_id: int) -> list[Entry]:
        return [(self.lines[i], rev, cells) for i, rev, cells in self.packed_entries(run_id)]

    def pack(self, run_id: int, entries: list[Entry]) -> tuple[str, list[int]]:
        """A run's entries for the manifest, and the indices of its lines."""
        out: list[list[Any]] = []
        indices: set[int] = set()
        for line, rev, cells in entries:
            key = tuple(line)
            if key not in self._index:
                self._index[key] = len(self.lines)
                self.lines.append(list(line))
            indices.add(self._index[key])
            out.append([self._index[key], rev, cells])
        self._unpacked[run_id] = out
        return json.dumps(out, separators=(",", ":")), sorted(indices)

    def save(self) -> None:
        data = {
            "format": MANIFEST_FORMAT,
            "layout": self.layout,
            "runs": self.runs,
            "lines": self.lines,
            "logs": self.logs,
            "line_keys": self.line_keys,
            "builds": self.builds,
            "bisections": self.bisections,
            "marks": self.marks,
        }
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, separators=(",", ":"), default=str))
        tmp.replace(self.path)


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


def render_site(
    store: ResultsStore,
    out: Path | None = None,
    *,
    full: bool = False,
    jobs: int = 1,
) -> RenderReport:
    """Render the store into ``out`` (default ``results/site``): only what changed since the
    last render (everything with ``full``), in up to ``jobs`` processes."""
    # a render makes many objects that live to its end (the manifest's entries, the caches):
    # the cyclic collector's passes over them would cost more than the few cycles it frees
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _render_site(store, out, full, jobs)
    finally:
        if collecting:
            gc.enable()


def _render_site(store: ResultsStore, out: Path | None, full: bool, jobs: int) -> RenderReport:
    started_at = time.perf_counter()
    site_dir = out if out is not None else store.results_dir / SITE_DIR
    site_dir.mkdir(parents=True, exist_ok=True)
    report = RenderReport(site_dir)
    env = environment()
    layout = layout_key(env)
    # the manifest belongs to one store: another one (--out shared) starts from nothing
    identity = key_of(layout, str(store.path.resolve()))
    manifest = Manifest(site_dir / MANIFEST, "" if full else identity)
    manifest.layout = identity

    runs = list(reversed(store.runs()))  # oldest first
    sigs, build_sigs = store.signatures(manifest.marks)
    ids = {str(r.id) for r in runs}
    manifest.marks["runs"] = {k: v for k, v in manifest.marks["runs"].items() if k in ids}
    regressions = store.regressions()
    bisections = store.bisections()
    baselines = _baselines(runs)
    started = {r.id: when(r.started) for r in runs}
    by_run: dict[int, list[RegressionRecord]] = {}
    for reg in regressions:
        for run_id in {reg.opened_run, reg.fixed_run}:
            if run_id is not None:
                by_run.setdefault(run_id, []).append(reg)
    window_part = {r.id: f"{r.id}:{sigs.get(r.id, '')}:{started[r.id]}" for r in runs}

    todo: list[RunJob] = []
    for i, run in enumerate(runs):
        base = baselines[run.id]
        window = [r.id for r in runs[max(0, i - HISTORY_RUNS + 1) : i]]
        mine = by_run.get(run.id, [])
        key = key_of(
            layout,
            _fields(run),
            sigs.get(run.id, ""),
            f"{_fields(base)}{sigs.get(base.id, '')}" if base else "",
            "|".join(window_part[q] for q in window),
            repr(mine),
        )
        known = manifest.runs.get(str(run.id))
        if known is not None and known["key"] == key:
            report.skipped += known["pages"]
            continue
        previous = runs[i - 1].id if i else None
        todo.append(RunJob(run, key, base, previous, window, mine))

    # -- run pages -----------------------------------------------------------------------------
    rendering = {job.run.id for job in todo}
    wanted: set[int] = set()
    for job in todo:
        wanted.update(q for q in job.window if q not in rendering)
        if job.baseline is not None and job.baseline.id not in rendering:
            wanted.add(job.baseline.id)
    context = {q: manifest.entries(q) for q in wanted if str(q) in manifest.runs}
    parts = min(max(1, jobs), max(1, len(todo) // PARALLEL_MIN_RUNS))
    chunks = [
        Chunk(store.results_dir, site_dir, part, started, context, dict(manifest.logs))
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
        report.written += result.written
        report.unchanged += result.unchanged
        report.removed += result.removed
        if result.largest[1] > report.largest[1]:
            report.largest = result.largest
        manifest.logs.update(result.log_keys)
        for r in result.runs:
            report.runs.append(r.run_id)
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
    present = {str(r.id) for r in runs}
    for gone in [k for k in manifest.runs if k not in present]:
        del manifest.runs[gone]
    _remove_stale_dirs(site_dir / "run", present, report)

    # -- pages over all runs ---------------------------------------------------------------------
    site = Site(site_dir, store.results_dir, env)
    site.known_logs = dict(manifest.logs)
    site.learn(facts)
    site.emit("style.css", env.get_template("style.css.j2").render())
    referenced_logs: set[str] = set()
    kept: dict[str, set[str]] = {d: set() for d in OWN_DIRS}

    # every line's history: the newest LINE_PAGE_RUNS runs, then full blocks of older ones
    by_line: dict[int, list[int]] = {}
    for run in runs:
        for index in manifest.runs[str(run.id)]["lines"]:
            by_line.setdefault(index, []).append(run.id)
    run_lines: dict[int, dict[int, list[tuple[str, list[list[Any]]]]]] = {}

    def entries_by_line(run_id: int) -> dict[int, list[tuple[str, list[list[Any]]]]]:
        """A run's entries by line index (read from the manifest once a run)."""
        found = run_lines.get(run_id)
        if found is None:
            found = run_lines[run_id] = {}
            for i, rev, cells in manifest.packed_entries(run_id):
                found.setdefault(i, []).append((rev, cells))
        return found

    line_keys: dict[str, str] = {}
    for index, line_runs in by_line.items():
        line = manifest.lines[index]
        front = line_page(line)
        blocks = len(line_runs) // LINE_PAGE_RUNS if len(line_runs) > LINE_PAGE_RUNS else 0
        archive = [
            (f"{k * LINE_PAGE_RUNS + 1}-{(k + 1) * LINE_PAGE_RUNS}", line_block(line, k))
            for k in range(blocks)
        ]
        pages: list[tuple[str, list[int], int | None]] = [
            (front, line_runs[-LINE_PAGE_RUNS:], None)
        ]
        pages += [
            (line_block(line, k), line_runs[k * LINE_PAGE_RUNS : (k + 1) * LINE_PAGE_RUNS], k)
            for k in range(blocks)
        ]
        for relative, shown, block in pages:
            key = key_of(layout, line, block, blocks, "|".join(window_part[q] for q in shown))
            line_keys[relative] = key
            kept["lines"].add(relative.split("/")[1])
            if manifest.line_keys.get(relative) == key:
                report.skipped += 1
                continue
            rows_html = [
                site.history_row("../", q, started[q], rev, cells)
                for q in reversed(shown)
                for rev, cells in reversed(entries_by_line(q).get(index, ()))
            ]
            site.render(
                "line.html.j2",
                relative,
                line=list(line),
                rows=Markup("".join([f"<tr>{row}</tr>\n" for row in rows_html])),  # noqa: S704
                shown=len(rows_html),
                runs=len(line_runs),
                block=block,
                archive=[(label, link.split("/")[1]) for label, link in archive],
                front=front.split("/")[1],
            )
    manifest.line_keys = line_keys

    # builds
    referenced_builds = sorted({b for entry in manifest.runs.values() for b in entry["builds"]})
    builds: dict[str, dict[str, Any]] = {}
    for build in referenced_builds:
        relative = f"build/{build}.html"
        kept["build"].add(f"{build}.html")
        key = key_of(layout, build, build_sigs.get(build))
        old = manifest.builds.get(build)
        if old is not None and old["key"] == key:
            report.skipped += 1
            builds[build] = old
            continue
        site.paged_logs = set()
        record = store.get_build(build)
        view = None
        if record is not None and record.log:
            view = site.log_view(relative, LogKind.BUILD_LOG.value, record.log, "build-log")
        site.render(
            "build.html.j2",
            relative,
            key=build,
            build=record,
            meta=meta_items(record.meta) if record else [],
            view=view,
        )
        builds[build] = {"key": key, "logs": sorted(site.paged_logs)}
    manifest.builds = builds

    # bisections
    bisection_keys: dict[str, dict[str, Any]] = {}
    for b in bisections:
        relative = f"bisect/{b.id}.html"
        kept["bisect"].add(f"{b.id}.html")
        log_rel = f"bisect/{b.id}/bisect.log"
        real = safe_file(store.results_dir, log_rel)
        stamp = None
        if real is not None:
            st = real.stat()
            stamp = (st.st_size, st.st_mtime_ns)
        key = key_of(layout, b.id, b.updated, b.status, b.request, b.report, stamp)
        old = manifest.bisections.get(str(b.id))
        if old is not None and old["key"] == key:
            report.skipped += 1
            bisection_keys[str(b.id)] = old
            continue
        site.paged_logs = set()
        _bisection(site, store, b, relative, log_rel)
        bisection_keys[str(b.id)] = {"key": key, "logs": sorted(site.paged_logs)}
    manifest.bisections = bisection_keys

    # long logs: the ones something refers to stay
    for entry in [*manifest.runs.values(), *builds.values(), *bisection_keys.values()]:
        referenced_logs.update(entry["logs"])
    manifest.logs.update(site.log_keys)
    manifest.logs = {k: v for k, v in manifest.logs.items() if k in referenced_logs}
    prefixes = {log_page(k, 1).split("/")[1].rsplit("-", 1)[0] for k in manifest.logs}
    _remove_unreferenced(site_dir / "log", prefixes, report)
    _remove_stale(site_dir / "lines", kept["lines"], report.removed, "lines/")
    _remove_stale(site_dir / "build", kept["build"], report.removed, "build/")
    _remove_stale(site_dir / "bisect", kept["bisect"], report.removed, "bisect/")

    # the index
    rows_html = []
    for run in reversed(runs):
        summary = manifest.runs[str(run.id)]["summary"]
        rows_html.append(run_row(run, started[run.id], summary))
    site.render(
        "index.html.j2",
        "index.html",
        runs=Markup("".join(rows_html)),  # noqa: S704 (rows of escaped cells)
        run_count=len(runs),
        run_ids={r.id for r in runs},
        bisections=[_bisection_row(b) for b in bisections],
        bisection_ids={b.id for b in bisections},
        open_regressions=[r for r in regressions if r.status == "open"],
    )
    report.written += site.out.written
    report.unchanged += site.out.unchanged
    if site.out.largest[1] > report.largest[1]:
        report.largest = site.out.largest
    manifest.save()
    report.seconds = time.perf_counter() - started_at
    return report


def _remove_stale_dirs(folder: Path, keep: set[str], report: RenderReport) -> None:
    """Remove the pages of runs the store no longer has."""
    try:
        names = [p.name for p in folder.iterdir() if p.is_dir()]
    except OSError:
        return
    for name in names:
        if name not in keep:
            shutil.rmtree(folder / name, ignore_errors=True)
            report.removed.append(f"run/{name}/")


def _remove_unreferenced(folder: Path, prefixes: set[str], report: RenderReport) -> None:
    """Remove the pages of long logs nothing refers to any more."""
    try:
        names = [p.name for p in folder.iterdir()]
    except OSError:
        return
    for name in names:
        if name.endswith(".html") and name.rsplit("-", 1)[0] not in prefixes:
            with contextlib.suppress(FileNotFoundError):
                (folder / name).unlink()
                report.removed.append(f"log/{name}")


def _bisection_row(b: BisectionRecord) -> dict[str, Any]:
    report = b.report or {}
    request = b.request
    culprit = report.get("culprit") if isinstance(report.get("culprit"), dict) else None
    good = report.get("good_given") or request.get("good") or []
    return {
        "id": b.id,
        "status": b.status,
        "created": b.created,
        "tree": str(report.get("tree") or request.get("tree") or "-"),
        "good": ", ".join(str(g)[:16] for g in good) if isinstance(good, list) else str(good),
        "bad": str(report.get("bad_given") or request.get("bad") or "-")[:16],
        "culprit": str(culprit.get("commit", "")) if culprit else "",
        "subject": str(culprit.get("subject", "")) if culprit else "",
        "confidence": report.get("confidence", "-"),
    }


def _items(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _verdict_row(v: dict[str, Any]) -> dict[str, Any]:
    keys = ("phase", "commit", "verdict", "runs", "passes", "fails", "skips", "errors")
    row = {k: v.get(k, "") for k in keys}
    row["confidence"] = v.get("confidence", "")
    row["detail"] = v.get("detail", "")
    if row["runs"] == "" and isinstance(v.get("passes"), int) and isinstance(v.get("fails"), int):
        row["runs"] = v["passes"] + v["fails"]
    return row


def _bisection(
    site: Site, store: ResultsStore, b: BisectionRecord, relative: str, log_rel: str
) -> None:
    report = b.report or {}
    request_keys = (
        "tree",
        "good",
        "bad",
        "variant",
        "predicate",
        "job",
        "test",
        "host",
        "profile",
        "command",
    )
    request = []
    for k in request_keys:
        value = report.get(f"{k}_given") or report.get(k) or b.request.get(k)
        if value in (None, "", []):
            continue
        request.append((k, ", ".join(map(str, value)) if isinstance(value, list) else str(value)))
    files = []
    for name in ("report.txt", "report.json", "junit.xml", "bisect.log"):
        link = site.file_link(relative, f"bisect/{b.id}/{name}")
        if link:
            files.append((name, link))
    log_view = None
    if safe_file(store.results_dir, log_rel) is not None:
        log_view = site.log_view(relative, "bisect-log", log_rel, "bisect-log")
    elif (store.results_dir / log_rel).is_symlink():
        log_view = LogView("bisect-log", "bisect log", "bisect-log")
        log_view.problem = "not shown: it is outside the results directory"
    culprit = report.get("culprit") if isinstance(report.get("culprit"), dict) else None
    if culprit is not None:
        files_list = culprit.get("files")
        culprit = {
            "commit": culprit.get("commit", ""),
            "subject": culprit.get("subject", ""),
            "author": culprit.get("author", ""),
            "date": culprit.get("date", ""),
            "files": [str(f) for f in files_list] if isinstance(files_list, list) else [],
        }
    validations = []
    for v in _items(report.get("validations")):
        detail = v.get("detail") if isinstance(v.get("detail"), dict) else None
        validations.append(
            {
                "name": v.get("name", ""),
                "expected": v.get("expected", ""),
                "verdict": v.get("verdict"),
                "ok": v.get("ok"),
                "note": v.get("note", ""),
                "detail": _verdict_row(detail) if detail else None,
            }
        )
    steps = [_verdict_row(v) for v in [*_items(report.get("ends")), *_items(report.get("steps"))]]
    flags = report.get("flags")
    if not isinstance(flags, list):
        flags = []
    site.render(
        "bisection.html.j2",
        relative,
        b=b,
        report={
            k: report.get(k)
            for k in (
                "message",
                "confidence",
                "runs",
                "restarts",
                "miss_rate",
                "false_alarm_rate",
            )
        },
        request=request,
        files=files,
        culprit=culprit,
        suspects=[
            {"commit": s.get("commit", ""), "subject": s.get("subject", "")}
            for s in _items(report.get("suspects"))
        ],
        flags=[str(f) for f in flags],
        validations=validations,
        steps=steps,
        trials=store.trials(b.id),
        bisect_log=log_view,
        text=str(report.get("text") or ""),
    )


def render_diff(
    store: ResultsStore, a: int, b: int, out: Path | None = None
) -> tuple[RunDiff, Path]:
    """Compare run A with run B and write the page ``diff/A-B.html``; the diff and the page."""
    records = []
    for run_id in (a, b):
        record = store.get_run(run_id)
        if record is None:
            raise UserError(f"no run {run_id} in {store.path}")
        records.append(record)
    cells_a, cells_b = store.cells(a), store.cells(b)
    d = diff_cells(records[0], records[1], cells_a, cells_b)
    site_dir = out if out is not None else store.results_dir / SITE_DIR
    site = Site(site_dir, store.results_dir)
    site.emit("style.css", site.env.get_template("style.css.j2").render())
    relative = f"diff/{a}-{b}.html"
    renderer = _RunRenderer(store, site, Chunk(store.results_dir, site_dir, [], {}, {}, {}))
    renderer.entries = {a: entries_of(cells_a), b: entries_of(cells_b)}
    renderer._diff(relative, d)
    return d, site_dir / relative
