"""A cell page, built in Python: the site has one per cell (64,000 in the benchmark), and Jinja
spends about a microsecond per expression and per yielded piece, most of a render from scratch.

``cell_html`` gives the markup the other pages get from ``base.html.j2``, with the cell's parts
in the same order as ever. Every value that comes from the store or a log (names, revisions,
details, reasons, commits, fingerprints, evidence, log lines) goes through
``kbisect.browser.fragments.text`` (control characters shown as escapes, then HTML-escaped);
integers are formatted with ``int()``. Pieces that repeat on many pages are built once and kept:
a subtest row, a fingerprint table, a log's section (see ``CellParts``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kbisect.browser.fragments import cls, css, errname, kv_rows, st, text
from kbisect.browser.safety import visible
from kbisect.results.model import CellRecord, Evidence, RunRecord, SubtestRecord


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
                detail += f' <span class="muted">(signal {int(s.signal)})</span>'
            if s.timed_out:
                detail += ' <span class="muted">(timed out)</span>'
            label = f'<span class="cls cls-{css(change)}">{text(change)}</span>' if change else ""
            found = (
                f"<tr><td>{text(s.name)}</td>"
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
    rid = int(run.id)
    variant = text(c.variant) if c.variant else "(as is)"
    h1 = (
        f"<h1>{st(c.status.value)} {text(c.tree)} {text(c.rev)} {variant} on {text(c.host)}: "
        f"{text(c.job)} #{int(c.repeat)}</h1>\n"
    )
    if c.reason:
        h1 += f'<p class="note">{text(c.reason)}</p>'
    commit = f" ({text(c.commit)})" if c.commit else ""
    patch = f' <span class="muted mono">patch {text(c.patch_hash)}</span>' if c.patch_hash else ""
    build = (
        f'<a class="mono" href="{text(build_link)}">{text(c.build_key)}</a>'
        if c.build_key
        else '<span class="muted">none</span>'
    )
    took = f" ({seconds} s)" if seconds is not None else ""
    junit_html = (
        f'<a href="{text(junit)}">junit.xml</a>' if junit else '<span class="muted">none</span>'
    )
    line = text(line_link)
    out = [
        h1,
        '<table class="kv">\n'
        f'<tr><th>run</th><td><a href="index.html">run {rid}</a> ({text(run.kind)}, '
        f"{text(run_started)})</td></tr>\n"
        f'<tr><th>tree, revision</th><td class="mono">{text(c.tree)} {text(c.rev)}{commit}'
        "</td></tr>\n"
        f"<tr><th>variant</th><td>{variant}{patch}</td></tr>\n"
        f"<tr><th>profile</th><td>{text(c.profile)}</td></tr>\n"
        f"<tr><th>build</th><td>{build}</td></tr>\n"
        f"<tr><th>host, job, repeat</th><td>{text(c.host)}, {text(c.job)}, {int(c.repeat)}"
        "</td></tr>\n"
        f"<tr><th>started, finished</th><td>{text(started)} .. {text(finished)}{took}</td></tr>\n"
        f"<tr><th>JUnit</th><td>{junit_html}</td></tr>\n"
        f'<tr><th>history</th><td><a href="{line}">this cell in every run</a></td></tr>\n'
        "</table>\n\n<h2>Subtests</h2>\n",
    ]
    whole = classes.get("cell")
    if c.subtests:
        out.append(
            '<table id="subtests">\n<thead><tr><th>subtest</th><th>status</th><th>errno</th>'
            "<th>detail</th><th>class</th></tr></thead>\n<tbody>\n"
        )
        out.append(parts.subtest_rows(c.subtests, classes))
        out.append("</tbody>\n</table>\n")
        if whole is not None:
            out.append(f"<p>the cell as a whole: {cls(whole)}</p>")
    else:
        label = f": {cls(whole)}" if whole is not None else ""
        out.append(f'<p class="muted">no subtests{label}</p>')
    out.append("\n")
    if c.evidence:
        out.append("<h2>Kernel and hypervisor evidence</h2>\n")
        out += [_evidence(e, link) for e, link in evidence]
    out.append("\n<h2>Logs</h2>\n")
    out += [view.section() for view in logs] or ['<p class="muted">no logs</p>']
    out.append("\n<h2>Host fingerprint</h2>\n")
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
        f'<span class="sep">/</span><a href="index.html">run {rid}</a>'
        f'<span class="sep">/</span>cell {int(c.id or 0)}'
    )
    return page_html("../../", csp_script, f"cell {int(c.id or 0)}", crumbs, "".join(out))
