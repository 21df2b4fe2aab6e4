"""The few page fragments that repeat thousands of times, built in Python rather than Jinja.

A cell page's subtest table and its history are most of a site's rows (64,000 cell pages of 15
subtests and 30 runs of history each in the benchmark); Jinja spends about a microsecond per
expression and per yielded piece, which is most of a render from scratch. These builders produce
the same markup at a fraction of the cost. Every value that is not an integer kbisect made goes
through ``text()``: control characters shown as escapes, then HTML-escaped.
"""

from __future__ import annotations

import errno as errno_module
from collections.abc import Iterable, Mapping
from typing import Any

from markupsafe import Markup, escape

from kbisect.browser.safety import visible
from kbisect.results.model import SubtestRecord


def text(value: object) -> str:
    """Untrusted text made safe for HTML content and attribute values."""
    return str(escape(visible(str(value))))


def css(value: object) -> str:
    """A CSS class token for a status or a change class ("STILL FAILING" -> "STILL-FAILING")."""
    token = str(value).replace(" ", "-")
    return token if token.replace("-", "").isalnum() else "other"


def errname(number: int) -> str:
    if not number:
        return "0"
    name = errno_module.errorcode.get(number)
    return f"{name} ({number})" if name else str(number)


def subtest_rows(subtests: Iterable[SubtestRecord], classes: Mapping[str, str]) -> Markup:
    """The body of a cell page's subtest table."""
    out = []
    for s in subtests:
        status = s.status.value
        detail = text(s.detail)
        if s.signal:
            detail += f' <span class="muted">(signal {int(s.signal)})</span>'
        if s.timed_out:
            detail += ' <span class="muted">(timed out)</span>'
        change = classes.get(s.name)
        label = f'<span class="cls cls-{css(change)}">{text(change)}</span>' if change else ""
        out.append(
            f"<tr><td>{text(s.name)}</td>"
            f'<td><span class="st st-{css(status)}">{status}</span></td>'
            f'<td class="mono">{errname(int(s.errno))}</td><td>{detail}</td><td>{label}</td></tr>\n'
        )
    return Markup("".join(out))  # noqa: S704 (built from escaped parts)


def history_cells(
    root: str, run: int, started: str, rev: str, cells: Iterable[Iterable[object]]
) -> Markup:
    """The cells of one history row: a run, when, the revision, and its repeats' statuses."""
    runs = f"{root}run/{int(run)}/"
    links = " ".join(
        f'<a class="st st-{css(status)}" href="{runs}cell-{int(cid)}.html" '  # type: ignore[call-overload]
        f'title="repeat {int(rep)}">{text(status)}</a>'  # type: ignore[call-overload]
        for cid, rep, status in cells
    )
    return Markup(  # noqa: S704 (built from escaped parts)
        f'<td><a href="{runs}index.html">run {int(run)}</a></td><td>{text(started)}</td>'
        f'<td class="mono">{text(rev)}</td><td>{links}</td>'
    )


def st(status: object) -> Markup:
    """A status badge (PASS, FAIL, ..., and bisection verdicts)."""
    return Markup(f'<span class="st st-{css(status)}">{text(status)}</span>')  # noqa: S704


def cls(name: object) -> Markup:
    """A change class label (REGRESSION, FIXED, ...)."""
    return Markup(f'<span class="cls cls-{css(name)}">{text(name)}</span>')  # noqa: S704


def kv_rows(items: Iterable[tuple[object, object]]) -> Markup:
    """Rows of a key/value table (a host fingerprint, a run's metadata)."""
    return Markup(  # noqa: S704 (escaped parts)
        "".join(f'<tr><th>{text(k)}</th><td class="mono">{text(v)}</td></tr>\n' for k, v in items)
    )


def log_section(view: Any) -> Markup:
    """A log on a page (a kbisect.browser.pages.LogView): inline, as a list of pages, or why it
    is not shown. Links come from kbisect (checked paths, quoted); the text was escaped."""
    label = text(view.label)
    anchor = text(view.anchor)
    raw = f' <a href="{text(view.raw)}">raw</a>' if view.raw else ""
    if view.problem:
        return Markup(  # noqa: S704
            f'<p id="{anchor}"><strong>{label}</strong>: '
            f'<span class="muted">{text(view.problem)}</span></p>\n'
        )
    if view.inline is not None:
        return Markup(  # noqa: S704
            f'<details open id="{anchor}"><summary>{label} '
            f'<span class="muted">({int(view.lines)} lines)</span>{raw}</summary>\n'
            f'<pre class="log">{view.inline}</pre>\n</details>\n'
        )
    cut = f", shown up to {int(view.shown_mib)} MiB" if view.truncated else ""
    pages = "".join(f'<a href="{text(link)}">page {int(n)}</a>' for n, link in view.pages)
    return Markup(  # noqa: S704
        f'<p id="{anchor}"><strong>{label}</strong> <span class="muted">({int(view.lines)} '
        f'lines{cut})</span>: <span class="pager">{pages}</span>{raw}</p>\n'
    )


def run_row(run: Any, started: str, summary: Mapping[str, Any]) -> Markup:
    """A run's row on the index (a kbisect.results.model.RunRecord and its summary)."""
    rid = int(run.id)
    kind = text(run.kind) + (f" ({text(run.pipeline)})" if run.pipeline else "")
    counts = " ".join(
        f'<span class="st st-{css(name)}" title="{text(name)}">{int(n)}</span>'
        for name, n in summary["counts"]
    )
    classes = " ".join(f"{cls(name)} {int(n)}" for name, n in summary["classes"])
    revs = text(", ".join(summary["revs"]))
    return Markup(  # noqa: S704 (escaped parts)
        f'<tr><td><a href="run/{rid}/index.html">{rid}</a></td><td>{kind}</td>'
        f"<td>{text(started)}</td><td>{st(run.status.value)}</td><td>{counts}</td>"
        f'<td class="mono">{revs}</td><td>{classes}</td></tr>\n'
    )
