"""Pages: the Jinja environment, the page writer, and what each page shows (the view models).

Every page is rendered by Jinja with autoescaping on, so text from kernels, hosts and patches
(subtest names, details, reasons, log lines, commit subjects, fingerprints) is escaped wherever it
lands; control characters are shown as escapes as well (``finalize``). No page carries the time
it was rendered, so a page whose inputs did not change renders to the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemBytecodeCache, PackageLoader, StrictUndefined
from markupsafe import Markup

from kbisect import __version__
from kbisect.browser import logs as logs_module
from kbisect.browser.fragments import (
    cls,
    css,
    errname,
    history_cells,
    kv_rows,
    log_section,
    log_section_html,
    st,
)
from kbisect.browser.logs import LogText, inline_log, lines_html, page_of, read_log
from kbisect.browser.safety import Resolver, slug, visible
from kbisect.pipeline.regressions import CELL, Pool
from kbisect.results.model import (
    CellRecord,
    Change,
    ChangeRecord,
    LogKind,
    ResultStatus,
    SubtestKey,
    check_relative,
)

LAYOUT = 1
"""Bump when the site's layout changes in a way templates do not show (file names, manifest)."""
HISTORY_RUNS = 10
"""A cell page shows the same cell in this many runs up to its own (the line page: in all)."""
NOTABLE_MAX = 500
"""At most this many notable changes are listed on a run page."""

CLASS_ORDER = (
    Change.REGRESSION.value,
    Change.NEVER_PASSED.value,
    Change.STILL_FAILING.value,
    Change.FLAKY.value,
    Change.INFRA.value,
    Change.FIXED.value,
    Change.NEW.value,
)
"""Change classes shown in the matrix, the most important first (PASS and SKIP are not)."""
STATUSES = tuple(s.value for s in ResultStatus)
LOG_LABELS = {
    LogKind.JOB_OUTPUT.value: "job output",
    LogKind.DMESG.value: "dmesg",
    LogKind.CONSOLE.value: "console",
    LogKind.BUILD_LOG.value: "build log",
    LogKind.JUNIT.value: "JUnit",
}

_PLAIN = re.compile("[A-Za-z0-9_.~/-]*")
"""Characters urllib.parse.quote leaves as they are."""

Entry = tuple[list[str], str, list[list[Any]]]
"""One line (tree, variant, profile, host, job) of one run at one revision: its repeats as
[cell id, repeat, status]. JSON-friendly: it is kept in the manifest."""


def digest(data: bytes | str, size: int = 12) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return hashlib.blake2b(raw, digest_size=size).hexdigest()


def key_of(*parts: Any) -> str:
    """A content key over JSON-able parts."""
    return digest(json.dumps(parts, sort_keys=True, default=str, separators=(",", ":")))


def when(value: datetime | None) -> str:
    """``2026-01-01 02:00:00 UTC`` (isoformat is faster than strftime: two a cell page)."""
    if value is None:
        return "-"
    utc = value.astimezone(UTC)
    if utc.year < 1000:  # strftime does not pad the year with zeros
        return utc.strftime("%Y-%m-%d %H:%M:%S UTC")
    return utc.isoformat(" ", "seconds")[:19] + " UTC"


def vjoin(items: Iterable[object], sep: str = ", ") -> str:
    """Join untrusted strings (control characters shown as escapes); autoescaping follows."""
    return sep.join(visible(str(item)) for item in items)


def _finalize(value: Any) -> Any:
    if type(value) is str:
        return visible(value)
    if value is None:
        return ""
    return value


def _bytecode_cache() -> FileSystemBytecodeCache | None:
    """Compiled templates in Jinja's private per-user temporary directory (it checks owner and
    mode), never in the site or results directory, which may come from elsewhere."""
    try:
        return FileSystemBytecodeCache()
    except RuntimeError:
        return None


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("kbisect.browser", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_finalize,
        auto_reload=False,
        bytecode_cache=_bytecode_cache(),
    )
    env.filters.update(when=when, errname=errname, css=css, vjoin=vjoin)
    env.globals.update(st=st, cls=cls, log=log_section, kv_rows=kv_rows)
    return env


def line_id(line: Sequence[str]) -> str:
    return digest(json.dumps(list(line)), 8)


def line_page(line: Sequence[str]) -> str:
    return f"lines/{line_id(line)}.html"


def line_block(line: Sequence[str], block: int) -> str:
    return f"lines/{line_id(line)}-{block + 1}.html"


def log_page(relative: str, number: int) -> str:
    return f"log/{digest(relative, 8)}-{number}.html"


def rev_page(run_id: int, tree: str, rev: str) -> str:
    return f"run/{run_id}/rev-{slug(rev)}-{digest(tree + chr(0) + rev, 4)}.html"


def cell_page(run_id: int, cell_id: int) -> str:
    return f"run/{run_id}/cell-{cell_id}.html"


LogFacts = tuple[tuple[int, int], int, bool, Markup | None, int]
"""What pages need of a log: (size, mtime) it was read at, lines, truncated, the inline lines'
markup (None: paged), pages."""


@dataclass
class Written:
    """What a renderer did: pages written, pages rendered to the bytes they had already."""

    written: list[str] = field(default_factory=list)
    unchanged: int = 0
    largest: tuple[str, int] = ("", 0)


@dataclass
class LogView:
    """A log as a page shows it: inline (short), or a list of pages, or why it is not shown."""

    kind: str
    label: str
    anchor: str
    raw: str | None = None
    inline: Markup | None = None
    pages: list[tuple[int, str]] = field(default_factory=list)
    lines: int = 0
    truncated: bool = False
    problem: str = ""
    relative: str = ""
    _section: str | None = None

    def section(self) -> str:
        """The log's section of a page (fragments.log_section), made once: a build log's view
        is shared by the pages of all the cells built by it."""
        if self._section is None:
            self._section = log_section_html(self)
        return self._section

    @property
    def shown_mib(self) -> int:
        return logs_module.MAX_LOG_BYTES // 2**20

    def line_link(self, line: int) -> str | None:
        if self.problem or line < 1 or line > self.lines:
            return None
        if self.inline is not None:
            return f"#{self.anchor}-L{line}"
        number = page_of(line)
        return f"{self.pages[number - 1][1]}#L{line}"


class Site:
    """Renders pages into a site directory: knows where the results are, writes a page only
    when its bytes changed, and shows logs without ever leaving the results directory."""

    def __init__(self, site: Path, results_dir: Path, env: Environment | None = None) -> None:
        self.site = site
        self.site_real = site.resolve()
        self.results = results_dir
        self.results_real = results_dir.resolve()
        self.to_results = Path(os.path.relpath(self.results_real, self.site_real)).as_posix()
        self.resolver = Resolver(results_dir)
        self._folders: set[str] = set()
        self._history: dict[tuple[str, int, str, int], Markup] = {}
        self.env = env or environment()
        self.script = Markup(self.env.get_template("filter.js.j2").render())  # noqa: S704
        sha = base64.b64encode(hashlib.sha256(str(self.script).encode()).digest()).decode()
        self.csp_script = f"'sha256-{sha}'"
        self.out = Written()
        self.rendered: set[str] = set()
        """Pages rendered since this was last emptied (to find stale ones)."""
        self._logs: dict[tuple[str, str], LogFacts] = {}
        self._views: dict[tuple[str, str, str, int], tuple[LogView, str]] = {}
        """Views of shared logs (build logs, long logs) already made, and their paged path."""
        self.paged_logs: set[str] = set()
        """Paged logs referred to by the pages rendered since this was last emptied."""
        self.known_logs: dict[str, str] = {}
        """Paged logs on disk (from the manifest): path in the results directory -> key."""
        self.log_keys: dict[str, str] = {}
        """Paged logs rendered here: path in the results directory -> key."""

    # -- writing -------------------------------------------------------------------------------

    def emit(self, relative: str, html: str) -> None:
        """Write a page unless the file has these bytes already."""
        data = html.encode("utf-8", errors="replace")
        self.rendered.add(relative)
        if len(data) > self.out.largest[1] and relative.endswith(".html"):
            self.out.largest = (relative, len(data))
        path = f"{self.site}/{relative}"
        folder = path.rpartition("/")[0]
        if folder not in self._folders:
            os.makedirs(folder, exist_ok=True)  # noqa: PTH103 (str paths: 70,000 pages)
            self._folders.add(folder)
        try:  # a new page (every page, from scratch): created, never a file replaced
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            pass
        else:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            self.out.written.append(relative)
            return
        try:
            size = os.stat(path).st_size  # noqa: PTH116
            same = size == len(data) and Path(path).read_bytes() == data
        except OSError:
            same = False
        if same:
            self.out.unchanged += 1
            return
        # replaced atomically: a reader never sees half a page
        tmp = f"{folder}/.{path.rpartition('/')[2]}.{os.getpid()}.tmp"
        Path(tmp).write_bytes(data)
        os.replace(tmp, path)  # noqa: PTH105
        self.out.written.append(relative)

    def render(self, template: str, relative: str, **ctx: Any) -> None:
        root = "../" * relative.count("/")
        html = self.env.get_template(template).render(root=root, csp_script=self.csp_script, **ctx)
        self.emit(relative, html)

    # -- links to files in the results directory -------------------------------------------

    def raw_link(self, page: str, real: str) -> str:
        """A link from a page to a checked file (a real path inside the results directory)."""
        inside = real[len(self.resolver.root) + 1 :]
        if not _PLAIN.fullmatch(inside):  # plain names (most) are what quote() leaves them
            inside = quote(inside)
        return "../" * page.count("/") + self.to_results + "/" + inside

    def file_link(self, page: str, relative: str) -> str | None:
        found = self.resolver.file(relative)
        return None if found is None else self.raw_link(page, found[0])

    # -- logs ----------------------------------------------------------------------------------

    def log_view(self, page: str, kind: str, relative: str, anchor: str) -> LogView:
        """How ``page`` shows the log at ``relative``: inline when short; otherwise as pages of
        LOG_PAGE_LINES lines (rendered here unless the manifest has them)."""
        shared = (relative, kind, anchor, page.count("/"))
        hit = self._views.get(shared)
        if hit is not None:  # a build log or a long log, as pages at this depth show it
            if hit[1]:
                self.paged_logs.add(hit[1])
            return hit[0]
        label = LOG_LABELS.get(kind, kind)
        short = None
        if kind != LogKind.BUILD_LOG.value:  # a cell's own log: opened as it is checked
            opened = self.resolver.open(relative)
            found = None if opened is None else (opened[0], opened[2])
            if opened is not None:
                try:
                    if opened[2].st_size <= logs_module.INLINE_MAX_BYTES:
                        # the usual short log of one cell: read, escaped and numbered in one go
                        short = inline_log(opened[1], opened[2].st_size, f"{anchor}-")
                except OSError:
                    short = None
                finally:
                    os.close(opened[1])
        else:
            found = self.resolver.file(relative)
        if found is None:
            view = LogView(kind, label, anchor, relative=relative)
            view.problem = _why_not(self.results, relative)
            return view
        real, st = found
        raw = self.raw_link(page, real)
        if short is not None:
            return LogView(kind, label, anchor, raw, short[0], lines=short[1], relative=relative)
        view = LogView(kind, label, anchor, raw=raw, relative=relative)
        stamp = (st.st_size, st.st_mtime_ns)
        # Long logs and build logs are shared by many pages: what pages need of them is kept
        # (not their text: millions of strings would make every garbage collection crawl).
        known = self._logs.get((real, anchor))
        if known is None or known[0] != stamp:
            try:
                text = read_log(real, st.st_size)
            except OSError:
                view.problem = "unreadable"
                return view
            inline = lines_html(text.lines, 1, f"{anchor}-") if text.inline else None
            known = (stamp, len(text.lines), text.truncated, inline, text.pages)
            if inline is None:
                self._paged(real, label, text, stamp)
            if inline is None or kind == LogKind.BUILD_LOG.value:
                self._logs[(real, anchor)] = known
        _, view.lines, view.truncated, view.inline, pages = known
        inside = ""
        if view.inline is None:
            inside = real[len(self.resolver.root) + 1 :]
            up = "../" * page.count("/")
            view.pages = [(n, up + log_page(inside, n)) for n in range(1, pages + 1)]
            self.paged_logs.add(inside)
        if view.inline is None or kind == LogKind.BUILD_LOG.value:
            if len(self._views) > 10_000:
                self._views.clear()
            self._views[shared] = (view, inside)
        return view

    def paged_facts(self) -> dict[tuple[str, str], LogFacts]:
        """What is known of the paged logs read here (for another Site: ``learn``)."""
        return {k: v for k, v in self._logs.items() if v[3] is None}

    def learn(self, facts: dict[tuple[str, str], LogFacts]) -> None:
        """Take what another Site knew of logs (each is read again if its stat changed)."""
        self._logs.update(facts)

    def _paged(self, real: str, label: str, text: LogText, stamp: tuple[int, int]) -> None:
        """Render a long log's pages unless the manifest has them for this content."""
        inside = real[len(self.resolver.root) + 1 :]
        content = key_of(inside, stamp, logs_module.LOG_PAGE_LINES)
        if self.known_logs.get(inside) != content and self.log_keys.get(inside) != content:
            self._render_log(inside, label, real, text)
            self.log_keys[inside] = content

    # -- history -------------------------------------------------------------------------------

    def history_row(
        self, root: str, run: int, started: str, rev: str, cells: list[list[Any]]
    ) -> Markup:
        """One history row's cells (cached: the same row is on up to HISTORY_RUNS cell pages and
        on the line's page)."""
        key = (root, run, rev, int(cells[0][0]) if cells else -1)
        found = self._history.get(key)
        if found is None:
            if len(self._history) > 100_000:
                self._history.clear()
            found = self._history[key] = history_cells(root, run, started, rev, cells)
        return found

    def _render_log(self, inside: str, label: str, real: str, text: LogText) -> None:
        total = text.pages
        for n in range(1, total + 1):
            relative = log_page(inside, n)
            first = (n - 1) * logs_module.LOG_PAGE_LINES + 1
            lines = text.page(n)
            near = sorted({1, total, *range(max(1, n - 5), min(total, n + 5) + 1)})
            self.render(
                "log.html.j2",
                relative,
                name=f"{label}: {inside}",
                page=n,
                pages=[(k, log_page(inside, k).split("/", 1)[1]) for k in near],
                first=first,
                last=first + len(lines) - 1,
                total=len(text.lines),
                truncated=text.truncated,
                shown_mib=logs_module.MAX_LOG_BYTES // 2**20,
                raw=self.raw_link(relative, real),
                body=lines_html(lines, first),
            )
        n = total + 1
        while (self.site / log_page(inside, n)).exists():  # the log got shorter
            (self.site / log_page(inside, n)).unlink()
            n += 1


def _why_not(results: Path, relative: str) -> str:
    """Why a referenced file is not shown (no link is made to it)."""
    outside = "not shown: it is outside the results directory"
    try:
        check_relative(relative)
    except ValueError:
        return outside
    if os.path.lexists(results / relative):
        return f"{outside} or not a regular file"
    return "missing"


# -- run pages -----------------------------------------------------------------------------------


def line_of(c: CellRecord) -> list[str]:
    return [c.tree, c.variant, c.profile, c.host, c.job]


def entries_of(cells: Iterable[CellRecord]) -> list[Entry]:
    """A run's cells as history entries: per line and revision, the repeats."""
    by: dict[tuple[str, ...], list[list[Any]]] = defaultdict(list)
    for c in cells:
        by[(*line_of(c), c.rev)].append([c.id, c.repeat, c.status.value])
    return [(list(k[:5]), k[5], sorted(v, key=lambda x: (x[1], x[0]))) for k, v in by.items()]


def summary_of(cells: Sequence[CellRecord], changes: Sequence[ChangeRecord]) -> dict[str, Any]:
    counts: dict[str, int] = defaultdict(int)
    for c in cells:
        counts[c.status.value] += 1
    classes: dict[str, int] = defaultdict(int)
    for ch in changes:
        if ch.change in CLASS_ORDER:
            classes[ch.change] += 1
    revs = list(dict.fromkeys(c.rev for c in cells))
    return {
        "counts": [[s, counts[s]] for s in STATUSES if counts.get(s)],
        "classes": [[k, classes[k]] for k in CLASS_ORDER if classes.get(k)],
        "revs": revs,
    }


@dataclass
class MatrixCell:
    repeats: list[CellRecord]
    changes: list[tuple[str, list[str]]]
    classes: list[str]

    @property
    def headline(self) -> str | None:
        return self.classes[0] if self.classes else None


@dataclass
class MatrixRow:
    tree: str
    rev: str
    variant: str
    profile: str
    cells: list[MatrixCell | None]
    tree_shown: bool
    profile_shown: bool
    text: str
    statuses: str
    classes: str


def matrix(
    cells: Sequence[CellRecord], changes: Sequence[ChangeRecord]
) -> tuple[list[tuple[str, str]], list[MatrixRow]]:
    """Rows (tree, revision, variant, profile) by columns (host, job); each entry the repeats and
    the change classes of its subtests, the most important first."""
    columns = sorted({(c.host, c.job) for c in cells})
    col_index = {col: i for i, col in enumerate(columns)}
    row_keys: list[tuple[str, str, str, str]] = []
    grid: dict[tuple[str, str, str, str], list[list[CellRecord]]] = {}
    for c in cells:
        rk = (c.tree, c.rev, c.variant, c.profile)
        if rk not in grid:
            grid[rk] = [[] for _ in columns]
            row_keys.append(rk)
        grid[rk][col_index[(c.host, c.job)]].append(c)
    by_cell: dict[tuple[str, ...], dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for ch in changes:
        if ch.change in CLASS_ORDER:
            k = ch.key
            by_cell[(k.tree, k.rev, k.variant, k.profile, k.host, k.job)][ch.change].append(
                k.subtest
            )
    revs = list(dict.fromkeys(rk[1] for rk in row_keys))
    rev_order = {r: i for i, r in enumerate(revs)}
    row_keys.sort(key=lambda rk: (rk[0], rev_order[rk[1]], rk[2], rk[3]))
    many_trees = len({rk[0] for rk in row_keys}) > 1
    many_profiles = len({rk[3] for rk in row_keys}) > 1
    rows = []
    for rk in row_keys:
        entries: list[MatrixCell | None] = []
        statuses: set[str] = set()
        classes: set[str] = set()
        words = [*rk]
        for (host, job), repeats in zip(columns, grid[rk], strict=True):
            if not repeats:
                entries.append(None)
                continue
            repeats.sort(key=lambda c: c.repeat)
            found = by_cell.get((*rk, host, job), {})
            ordered = [k for k in CLASS_ORDER if k in found]
            entries.append(MatrixCell(repeats, [(k, found[k]) for k in ordered], ordered))
            statuses.update(c.status.value for c in repeats)
            classes.update(ordered)
            words += [host, job]
            for c in repeats:
                if c.reason:
                    words.append(c.reason)
                words += [s.name for s in c.subtests if s.status is not ResultStatus.PASS]
        rows.append(
            MatrixRow(
                *rk,
                cells=entries,
                tree_shown=many_trees,
                profile_shown=many_profiles,
                text=visible(" ".join(words).lower()),
                statuses="|".join(sorted(statuses)),
                classes="|".join(k for k in CLASS_ORDER if k in classes),
            )
        )
    return columns, rows


def pool_of(cells: Iterable[CellRecord]) -> dict[SubtestKey, Pool]:
    """kbisect.pipeline.regressions.pool (subtest results of a run's cells, repeats pooled), in
    about a third of its time: a key is made once per subtest line, not once per result."""
    pools: dict[SubtestKey, Pool] = {}
    passed, failed, skipped = ResultStatus.PASS, ResultStatus.FAIL, ResultStatus.SKIP
    for cell in cells:
        base = (cell.tree, cell.rev, cell.variant, cell.profile, cell.host, cell.job)
        if cell.subtests:
            results = [((*base, s.name), s.status) for s in cell.subtests]
            # kernel evidence fails the cell even when every subtest passed: a line of its own
            if cell.evidence and cell.status is failed:
                results.append(((*base, CELL), failed))
        else:
            results = [((*base, CELL), cell.status)]
        for key, status in results:
            p = pools.get(key)  # type: ignore[call-overload]  # a tuple finds an equal key
            if p is None:
                p = pools[SubtestKey._make(key)] = Pool()
            if status is passed:
                p.passes += 1
            elif status is failed:
                p.fails += 1
            elif status is skipped:
                p.skips += 1
            else:  # ERROR, MISS
                p.errors += 1
    return pools


def variant_table_of(
    pools: Mapping[SubtestKey, Pool], cells: Sequence[CellRecord], tree: str, rev: str
) -> tuple[list[str], list[str], dict[tuple[str, str], Pool]]:
    """kbisect.pipeline.regressions.variant_table for one tree and revision, from the pools of
    the whole run (pooled once a run) and the cells at that revision: variants, subtests, and
    pass/fail counts over repeats, hosts and jobs per (subtest, variant)."""
    mine = [(k, p) for k, p in pools.items() if k.rev == rev and k.tree == tree]
    variants = sorted({k.variant for k, _ in mine})
    subtests = list(dict.fromkeys(s.name for c in cells for s in c.subtests))
    if any(k.subtest == CELL for k, _ in mine):
        subtests.append(CELL)
    table: dict[tuple[str, str], Pool] = {}
    for key, p in mine:
        into = table.get((key.subtest, key.variant))
        if into is None:
            into = table[(key.subtest, key.variant)] = Pool()
        into.passes += p.passes
        into.fails += p.fails
        into.errors += p.errors
        into.skips += p.skips
    return variants, subtests, table


def meta_items(meta: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (str(k), v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))
        for k, v in sorted(meta.items())
    ]


def notable_changes(
    changes: Sequence[ChangeRecord], first_cell: Callable[[tuple[str, ...]], int | None]
) -> tuple[list[tuple[ChangeRecord, str | None]], int]:
    picked = [ch for ch in changes if ch.change in CLASS_ORDER]
    picked.sort(key=lambda ch: (CLASS_ORDER.index(ch.change), ch.key))
    out = []
    for ch in picked[:NOTABLE_MAX]:
        k = ch.key
        cid = first_cell((k.tree, k.rev, k.variant, k.profile, k.host, k.job))
        out.append((ch, f"cell-{cid}.html" if cid is not None else None))
    return out, max(0, len(picked) - NOTABLE_MAX)


def layout_key(env: Environment) -> str:
    """Changes whenever anything that shapes pages changes: kbisect, the templates, the code
    that builds pages in Python (this package's modules), limits."""
    assert env.loader is not None
    sources = [env.loader.get_source(env, name)[0] for name in sorted(env.loader.list_templates())]
    code = [digest(p.read_bytes()) for p in sorted(Path(__file__).parent.glob("*.py"))]
    return key_of(
        LAYOUT,
        __version__,
        sources,
        code,
        HISTORY_RUNS,
        NOTABLE_MAX,
        logs_module.LOG_PAGE_LINES,
        logs_module.INLINE_MAX_LINES,
        logs_module.INLINE_MAX_BYTES,
        logs_module.MAX_LOG_BYTES,
    )
