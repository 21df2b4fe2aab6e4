"""A cell page, built in Python: the site has one per cell (64,000 in the benchmark), and Jinja
spends about a microsecond per expression and per yielded piece, most of a render from scratch.

``cell_html`` gives the markup the other pages get from ``base.html.j2``, with the cell's parts
in the same order as ever. Every value that comes from the store or a log (names, revisions,
details, reasons, commits, fingerprints, evidence, log lines) goes through
``kbisect.browser.fragments.text`` (control characters shown as escapes, then HTML-escaped);
integers are formatted with ``int()``. Pieces that repeat on many pages are built once and kept:
a subtest row, a fingerprint table, a log's section (see ``CellParts``). ``CellPages`` renders
the pages (run/RUN/cell-CELL.html): a cell's logs, evidence links and history.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kbisect.browser.expect import failure_tag
from kbisect.browser.fragments import cls, css, errname, kv_rows, st, subtest_anchor, text
from kbisect.browser.history import History
from kbisect.browser.pages import HISTORY_RUNS, cell_page, line_page, when
from kbisect.browser.safety import visible
from kbisect.browser.site import LogView, Site
from kbisect.results.model import (
    CellRecord,
    Evidence,
    LogKind,
    ResultStatus,
    RunRecord,
    SubtestRecord,
)


def page_html(
    root: str, csp_script: str, title: str, crumbs: str, content: str, script: str = ""
) -> str:
    """A whole page: base.html.j2's frame around ``content`` (markup; ``title`` is text)."""
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'self'; img-src 'self' data:; "
        f"script-src {text(csp_script)}; base-uri 'none'; form-action 'none'\">\n"
        '<meta name="referrer" content="no-referrer">\n'
        f"<title>{text(title)} &#183; kbisect</title>\n"  # an entity: ASCII pages encode fast
        f'<link rel="stylesheet" href="{root}style.css">\n</head>\n<body>\n'
        f'<nav><a href="{root}index.html">kbisect results</a>{crumbs}</nav>\n<main>\n'
        f"{content}</main>\n{script}</body>\n</html>"
    )


@dataclass
class CellParts:
    """Pieces of cell pages that repeat: kept across the cells (and runs) one process renders."""

    rows: dict[tuple[Any, ...], str] = field(default_factory=dict)
    tables: dict[tuple[Any, ...], str] = field(default_factory=dict)
    shared: dict[tuple[int, tuple[tuple[str, str], ...]], tuple[object, str]] = field(
        default_factory=dict
    )
    """Tables by the identity of a subtests tuple (the store shares equal ones), kept with it."""
    fingerprints: dict[tuple[tuple[str, str], ...], str] = field(default_factory=dict)

    def subtest_row(self, s: SubtestRecord, change: str | None) -> str:
        key = (s.name, s.status, s.errno, s.detail, s.signal, s.timed_out, change)
        found = self.rows.get(key)
        if found is None:
            status = s.status.value
            detail = text(s.detail)
            if s.signal:
                name = text(failure_tag(0, s.signal, False))
                detail += f' <span class="muted">(signal {int(s.signal)}, {name})</span>'
            if s.timed_out:
                detail += ' <span class="muted">(timed out)</span>'
            label = f'<span class="cls cls-{css(change)}">{text(change)}</span>' if change else ""
            found = (
                f'<tr id="{subtest_anchor(s.name)}"><td>{text(s.name)}</td>'
                f'<td><span class="st st-{css(status)}">{text(status)}</span></td>'
                f'<td class="mono">{errname(int(s.errno))}</td><td>{detail}</td>'
                f"<td>{label}</td></tr>\n"
            )
            if len(self.rows) > 50_000:
                self.rows.clear()
            self.rows[key] = found
        return found

    def subtest_rows(self, subtests: Sequence[SubtestRecord], classes: Mapping[str, str]) -> str:
        """A cell's subtest table body: most cells of a line have the same one run after run
        (the store shares equal subtest tuples: those are looked up by identity, not hashed)."""
        labels = tuple(classes.items())
        mine = (id(subtests), labels)
        hit = self.shared.get(mine)
        if hit is not None and hit[0] is subtests and type(subtests) is tuple:  # kept: its id
            return hit[1]
        key = (tuple(subtests), labels)
        found = self.tables.get(key)
        if found is None:
            found = "".join([self.subtest_row(s, classes.get(s.name)) for s in subtests])
            if len(self.tables) > 5_000:
                self.tables.clear()
            self.tables[key] = found
        if len(self.shared) > 5_000:
            self.shared.clear()
        self.shared[mine] = (subtests, found)
        return found

    def fingerprint(self, fingerprint: Mapping[str, str]) -> str:
        key = tuple(sorted(fingerprint.items()))
        found = self.fingerprints.get(key)
        if found is None:
            if len(self.fingerprints) > 1_000:
                self.fingerprints.clear()
            found = self.fingerprints[key] = str(kv_rows(key))
        return found


def _evidence(e: Evidence, link: str | None) -> str:
    where = f' <a href="{text(link)}">line {int(e.line)}</a>' if link else f" line {int(e.line)}"
    out = f"<p><strong>{text(e.signature)}</strong> in {text(e.source.value)}{where}"
    if e.also:
        out += f'<span class="muted">(also {text(", ".join(map(visible, e.also)))})</span>'
    if not e.strong:
        out += '<span class="muted">weak: does not fail the cell</span>'
    if e.more:
        out += f'<span class="muted">and {int(e.more)} more like it</span>'
    weak = "" if e.strong else " weak"
    lines = text("\n".join(map(visible, e.lines)))
    return f'{out}</p>\n<pre class="evidence{weak}">{lines}</pre>\n'


def cell_html(
    parts: CellParts,
    *,
    csp_script: str,
    run: RunRecord,
    run_started: str,
    cell: CellRecord,
    classes: Mapping[str, str],
    evidence: Sequence[tuple[Evidence, str | None]],
    logs: Sequence[Any],
    build_link: str,
    junit: str | None,
    seconds: float | None,
    history: str,
    history_runs: int,
    line_link: str,
    started: str,
    finished: str,
) -> str:
    """A cell page (run/RUN/cell-CELL.html): the cell, its subtests with their change classes,
    kernel evidence, logs (``LogView``s), host fingerprint and the history of its line."""
    c = cell
    line = text(line_link)
    took = f" ({seconds} s)" if seconds is not None else ""
    out = [
        _heading(c),
        _facts(
            c, run, run_started, build_link, junit, f"{text(started)} .. {text(finished)}{took}"
        ),
        f'<tr><th>history</th><td><a href="{line}">this cell in every run</a></td></tr>\n'
        "</table>\n\n<h2>Subtests</h2>\n",
        *_subtests(parts, c, classes),
        "\n",
    ]
    if c.evidence:
        out.append("<h2>Kernel and hypervisor evidence</h2>\n")
        out += [_evidence(e, link) for e, link in evidence]
    out.append("\n<h2>Logs</h2>\n")
    out += [view.section() for view in logs] or ['<p class="muted">no logs</p>']
    out.append("\n<h2>Host fingerprint</h2>\n")
    out.append(_lava_job(c.fingerprint))
    if c.fingerprint:
        out.append(f'<table class="kv">{parts.fingerprint(c.fingerprint)}</table>\n')
    else:
        out.append('<p class="muted">none recorded</p>')
    out.append(
        "\n<h2>History</h2>\n"
        f'<p class="muted">The same tree, variant, profile, host and job in the last '
        f'{int(history_runs)} runs up to this one; <a href="{line}">all runs</a>.</p>\n'
        '<table id="history">\n<thead><tr><th>run</th><th>started</th><th>revision</th>'
        f"<th>repeats</th></tr></thead>\n<tbody>\n{history}\n</tbody>\n</table>\n"
    )
    crumbs = (
        f'<span class="sep">/</span><a href="index.html">run {int(run.id)}</a>'
        f'<span class="sep">/</span>cell {int(c.id or 0)}'
    )
    return page_html("../../", csp_script, cell_title(run, c), crumbs, "".join(out))


_PASSED = (ResultStatus.PASS, ResultStatus.SKIP)


def cell_title(run: RunRecord, c: CellRecord) -> str:
    """What a cell page shows, as its title: "v6.1.192-3 · none · numa-soak FAIL · run 12 ·
    qemu/gntstress #1" (the failing subtests, else the cell's status)."""
    failing = []
    if c.status is not ResultStatus.PASS:  # a passing cell has no failing subtest
        failing = [s.name for s in c.subtests if s.status not in _PASSED]
    what = c.status.value
    if failing:
        more = f" +{len(failing) - 2}" if len(failing) > 2 else ""
        what = f"{', '.join(failing[:2])}{more} {c.status.value}"
    variant = c.variant.rsplit("/", 1)[-1] if c.variant else "(as is)"
    return f"{c.rev} · {variant} · {what} · run {run.id} · {c.host}/{c.job} #{c.repeat}"


def _variant(c: CellRecord) -> str:
    return text(c.variant) if c.variant else "(as is)"


def _heading(c: CellRecord) -> str:
    h1 = (
        f"<h1>{st(c.status.value)} {text(c.tree)} {text(c.rev)} {_variant(c)} on {text(c.host)}: "
        f"{text(c.job)} #{int(c.repeat)}</h1>\n"
    )
    if c.reason:
        h1 += f'<p class="note">{text(c.reason)}</p>'
    return h1


def _facts(
    c: CellRecord, run: RunRecord, run_started: str, build_link: str, junit: str | None, times: str
) -> str:
    """The table of what the cell is (up to its history link)."""
    commit = f" ({text(c.commit)})" if c.commit else ""
    patch = f' <span class="muted mono">patch {text(c.patch_hash)}</span>' if c.patch_hash else ""
    build = (
        f'<a class="mono" href="{text(build_link)}">{text(c.build_key)}</a>'
        if c.build_key
        else '<span class="muted">none</span>'
    )
    junit_html = (
        f'<a href="{text(junit)}">junit.xml</a>' if junit else '<span class="muted">none</span>'
    )
    return (
        '<table class="kv">\n'
        f'<tr><th>run</th><td><a href="index.html">run {int(run.id)}</a> ({text(run.kind)}, '
        f"{text(run_started)})</td></tr>\n"
        f'<tr><th>tree, revision</th><td class="mono">{text(c.tree)} {text(c.rev)}{commit}'
        "</td></tr>\n"
        f"<tr><th>variant</th><td>{_variant(c)}{patch}</td></tr>\n"
        f"<tr><th>profile</th><td>{text(c.profile)}</td></tr>\n"
        f"<tr><th>build</th><td>{build}</td></tr>\n"
        f"<tr><th>host, job, repeat</th><td>{text(c.host)}, {text(c.job)}, {int(c.repeat)}"
        "</td></tr>\n"
        f"<tr><th>started, finished</th><td>{times}</td></tr>\n"
        f"{_boot(c)}"
        f"<tr><th>JUnit</th><td>{junit_html}</td></tr>\n"
    )


def _boot(c: CellRecord) -> str:
    """The boot row, for a cell whose deploy booted its kernel (others ran on one already up)."""
    if c.boot_seconds is None:
        return ""
    return (
        f"<tr><th>boot</th><td>{float(c.boot_seconds):g} s, from the deploy's start to the "
        "verified login (this cell's deploy booted the kernel)</td></tr>\n"
    )


def _subtests(parts: CellParts, c: CellRecord, classes: Mapping[str, str]) -> list[str]:
    """The subtests section: their table (or none), and the class of the cell as a whole."""
    whole = classes.get("cell")
    if not c.subtests:
        label = f": {cls(whole)}" if whole is not None else ""
        return [f'<p class="muted">no subtests{label}</p>']
    out = [
        '<table id="subtests">\n<thead><tr><th>subtest</th><th>status</th><th>errno</th>'
        "<th>detail</th><th>class</th></tr></thead>\n<tbody>\n",
        parts.subtest_rows(c.subtests, classes),
        "</tbody>\n</table>\n",
    ]
    if whole is not None:
        out.append(f"<p>the cell as a whole: {cls(whole)}</p>")
    return out


class CellPages:
    """Renders cell pages (run/RUN/cell-CELL.html), keeping what repeats across the cells and
    runs of one process."""

    def __init__(self, site: Site, history: History) -> None:
        self.site = site
        self.history = history
        self.parts = CellParts()
        self._line_links: dict[tuple[str, ...], str] = {}

    def render(
        self,
        run: RunRecord,
        run_started: str,
        c: CellRecord,
        classes: Mapping[str, str],
        history_runs: list[int],
        junit: str | None,
    ) -> None:
        """The page of cell ``c`` of ``run``: ``classes`` are its subtests' change classes,
        ``history_runs`` the runs its history shows (oldest first), ``junit`` the run's."""
        assert c.id is not None
        site = self.site
        page = cell_page(run.id, c.id)
        views, junit_links = self._logs(page, c)
        evidence = []
        for e in c.evidence:
            view = next((v for v in views if v.kind == e.source.value), None)
            evidence.append((e, view.line_link(e.line) if view else None))
        line = (c.tree, c.variant, c.profile, c.host, c.job)
        history = self.history.rows(line, run.id, history_runs)
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
                run_started=run_started,
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

    def _logs(self, page: str, c: CellRecord) -> tuple[list[LogView], list[str]]:
        """The cell's logs as the page shows them, and links to its own JUnit files."""
        views: list[LogView] = []
        seen: dict[str, int] = {}
        junit_links = []
        for ref in c.logs:
            kind = ref.kind.value
            if ref.kind is LogKind.JUNIT:
                link = self.site.file_link(page, ref.path)
                if link:
                    junit_links.append(link)
                continue
            seen[kind] = seen.get(kind, 0) + 1
            anchor = kind if seen[kind] == 1 else f"{kind}-{seen[kind]}"
            views.append(self.site.log_view(page, kind, ref.path, anchor))
        return views, junit_links


def _lava_job(fingerprint: Mapping[str, str]) -> str:
    """The LAVA job that ran a cell on a LAVA host, linked to its page in LAVA."""
    url = fingerprint.get("lava_job_url", "")
    if not url.startswith(("http://", "https://")):
        return ""
    job = text(fingerprint.get("lava_job", url))
    return f'<p>Run as LAVA job <a class="lava-job" href="{text(url)}">{job}</a>.</p>\n'
