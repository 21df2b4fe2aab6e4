"""The site directory: a page writer that writes only what changed, links into the results
directory that never leave it, and logs shown inline or as pages of their own."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment
from markupsafe import Markup

from kbisect.browser import logs as logs_module
from kbisect.browser.fragments import history_cells, log_section_html
from kbisect.browser.logs import LogText, inline_log, lines_html, page_of, read_log
from kbisect.browser.pages import LOG_LABELS, environment, key_of, log_page
from kbisect.browser.safety import Resolver
from kbisect.results.model import LogKind, check_relative

_PLAIN = re.compile("[A-Za-z0-9_.~/-]*")
"""Characters urllib.parse.quote leaves as they are."""


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


# -- pages nothing refers to any more ------------------------------------------------------------


def remove_stale(folder: Path, keep: set[str], removed: list[str], prefix: str) -> None:
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


def remove_stale_dirs(folder: Path, keep: set[str], removed: list[str]) -> None:
    """Remove the pages of runs the store no longer has (run/RUN/)."""
    try:
        names = [p.name for p in folder.iterdir() if p.is_dir()]
    except OSError:
        return
    for name in names:
        if name not in keep:
            shutil.rmtree(folder / name, ignore_errors=True)
            removed.append(f"run/{name}/")


def remove_unreferenced(folder: Path, prefixes: set[str], removed: list[str]) -> None:
    """Remove the pages of long logs nothing refers to any more (log/)."""
    try:
        names = [p.name for p in folder.iterdir()]
    except OSError:
        return
    for name in names:
        if name.endswith(".html") and name.rsplit("-", 1)[0] not in prefixes:
            with contextlib.suppress(FileNotFoundError):
                (folder / name).unlink()
                removed.append(f"log/{name}")
