"""The few page fragments that repeat thousands of times, built in Python rather than Jinja.

A cell page's subtest table and its history are most of a site's rows (64,000 cell pages of 15
subtests and 30 runs of history each in the benchmark); Jinja spends about a microsecond per
expression and per yielded piece, which is most of a render from scratch. These builders produce
the same markup at a fraction of the cost. Every value that is not an integer kbisect made goes
through ``text()``: control characters shown as escapes, then HTML-escaped.
"""

from __future__ import annotations

import errno as errno_module
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from markupsafe import Markup, escape

from kbisect.browser.expect import Expected, Verdict, judge
from kbisect.browser.safety import slug, visible
from kbisect.results.rates import Rate, percent


@functools.lru_cache(maxsize=1 << 16)
def _text(value: str) -> str:
    return str(escape(visible(value)))


def text(value: object) -> str:
    """Untrusted text made safe for HTML content and attribute values (kept: the same names,
    revisions, hosts and details come again on thousands of pages)."""
    return _text(value if type(value) is str else str(value))


def css(value: object) -> str:
    """A CSS class token for a status or a change class ("STILL FAILING" -> "STILL-FAILING")."""
    token = str(value).replace(" ", "-")
    return token if token.replace("-", "").isalnum() else "other"


_css = functools.lru_cache(maxsize=256)(css)
"""css() of the few statuses and classes there are, kept."""


def errname(number: int) -> str:
    if not number:
        return "0"
    name = errno_module.errorcode.get(number)
    return f"{name} ({number})" if name else str(number)


def history_cells(
    root: str, run: int, started: str, rev: str, cells: Iterable[Iterable[object]]
) -> Markup:
    """The cells of one history row: a run, when, the revision, and its repeats' statuses."""
    runs = f"{root}run/{int(run)}/"
    links = " ".join(
        [
            f'<a class="st st-{_css(status)}" href="{runs}cell-{int(cid)}.html" '  # type: ignore[call-overload]
            f'title="repeat {int(rep)}">{text(status)}</a>'  # type: ignore[call-overload]
            for cid, rep, status in cells
        ]
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
    return Markup(log_section_html(view))  # noqa: S704 (escaped parts)


def log_section_html(view: Any) -> str:
    """log_section as a plain string (what a page built in Python joins)."""
    label = text(view.label)
    anchor = text(view.anchor)
    raw = f' <a href="{text(view.raw)}">raw</a>' if view.raw else ""
    if view.problem:
        return (
            f'<p id="{anchor}"><strong>{label}</strong>: '
            f'<span class="muted">{text(view.problem)}</span></p>\n'
        )
    if view.inline is not None:
        return (
            f'<details open id="{anchor}"><summary>{label} '
            f'<span class="muted">({int(view.lines)} lines)</span>{raw}</summary>\n'
            f'<pre class="log">{view.inline}</pre>\n</details>\n'
        )
    cut = f", shown up to {int(view.shown_mib)} MiB" if view.truncated else ""
    pages = "".join(f'<a href="{text(link)}">page {int(n)}</a>' for n, link in view.pages)
    return (
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


def _or_as_is(variant: str) -> str:
    return text(variant) if variant else "(as is)"


def subtest_anchor(name: str) -> str:
    """The id of a subtest's row on a cell page (``#t-odirect-read``)."""
    return "t-" + slug(name, 60)


def variant_rows(
    variants: Iterable[str],
    subtests: Iterable[str],
    table: Mapping[tuple[str, str], Any],
    expected: Mapping[tuple[str, str], Expected | None],
    failures: Mapping[tuple[str, str], Sequence[tuple[str, int, str]]],
) -> Markup:
    """The body of a revision page's table: per subtest, each variant's pooled result (a
    kbisect.pipeline.regressions.Pool: passes of runs, its failure rate and 95% interval in the
    title, and in small print where it is flaky), whether it is what the experiment expects,
    and how it failed (EFAULT, SIGBUS: each a link to the subtest on a cell that failed so, its
    detail in the link's title)."""
    chosen = list(variants)
    out = []
    for name in subtests:
        row = [f"<tr><th>{text(name)}</th>\n"]
        for v in chosen:
            p = table.get((name, v))
            if p is None:
                row.append('<td class="muted">-</td>')
                continue
            status = p.status
            extra = f' <span class="muted">{int(p.errors)} error</span>' if p.errors else ""
            if p.skips:
                extra += f' <span class="muted">{int(p.skips)} skip</span>'
            for tag, cell_id, detail in failures.get((name, v), ()):
                extra += (
                    f' <a class="tag" href="cell-{int(cell_id)}.html#{subtest_anchor(name)}" '
                    f'title="{text(detail)}">{text(tag)}</a>'
                )
            want = expected.get((name, v))
            verdict = judge(want, p.passes, p.fails, p.skips)
            mark, td = "", "<td>"
            if verdict is Verdict.UNEXPECTED:
                td = '<td class="unexpected">'
                mark = f' <span class="ex ex-no">unexpected: expected {text(want)}</span>'
            elif verdict is Verdict.EXPECTED and want and want.word != "pass":  # quiet passes
                mark = f' <span class="ex ex-ok">expected {text(want)}</span>'
            row.append(
                f'{td}<span class="st st-{css(status)}">{text(status)}</span> '
                f"{_counts(p.rate)}{extra}{mark}</td>"
            )
        row.append("</tr>\n")
        out.append("".join(row))
    return Markup("".join(out))  # noqa: S704 (escaped parts)


def _counts(rate: Rate) -> str:
    """``2/3`` passes of runs, the rate in the title; a flaky one says its interval."""
    counts = f'<span class="n" title="{text(rate.describe())}">{rate.passes}/{rate.runs}</span>'
    if not rate.flaky:
        return counts
    low, high = rate.interval
    return f'{counts} <small class="rate">fails {percent(low, sign=False)}-{percent(high)}</small>'


def variant_cells(variants: Iterable[str], cells: Mapping[str, Sequence[Any]]) -> Markup:
    """The body of a revision page's table of cells by variant (CellRecords)."""
    out = []
    for v in variants:
        links = "".join(
            f'<a class="st st-{css(c.status.value)}" href="cell-{int(c.id)}.html" '
            f'title="{text(c.host)} {text(c.job)} repeat {int(c.repeat)}">'
            f"{text(c.status.value)}</a> "
            for c in cells.get(v, ())
        )
        out.append(f"<tr><th>{_or_as_is(v)}</th><td>{links}</td></tr>\n")
    return Markup("".join(out))  # noqa: S704 (escaped parts)


def matrix_rows(rows: Iterable[Any]) -> Markup:
    """The body of a run page's matrix (kbisect.browser.pages.MatrixRow): a row per revision
    and variant, a cell per host and job with its repeats' links and its change classes."""
    out = []
    for row in rows:
        tree = f"{text(row.tree)}:" if row.tree_shown else ""
        profile = f' <span class="muted">{text(row.profile)}</span>' if row.profile_shown else ""
        parts = [
            f'<tr data-text="{text(row.text)}" data-status="{text(row.statuses)}" '
            f'data-classes="{text(row.classes)}">\n'
            f'<th class="mono">{tree}{text(row.rev)}</th>\n'
            f"<th>{_or_as_is(row.variant)}{profile}</th>\n"
        ]
        for mc in row.cells:
            if mc is None:
                parts.append('<td class="mc muted">-</td>')
                continue
            out_cls = f" out-{css(mc.headline)}" if mc.headline else ""
            classes = text("|".join(map(visible, mc.classes)))
            parts.append(f'<td class="mc{out_cls}" data-classes="{classes}">\n')
            for c in mc.repeats:
                reason = f": {text(c.reason)}" if c.reason else ""
                parts.append(
                    f'<a class="st st-{css(c.status.value)}" href="cell-{int(c.id)}.html" '
                    f'title="repeat {int(c.repeat)}{reason}">{text(c.status.value)}</a> '
                )
            for name, subtests in mc.changes:
                names = text(", ".join(map(visible, subtests)))
                parts.append(f'<br>{cls(name)} <span class="muted">{names}</span>')
            parts.append("</td>")
        parts.append("</tr>\n")
        out.append("".join(parts))
    return Markup("".join(out))  # noqa: S704 (escaped parts)


def notable_rows(notable: Iterable[tuple[Any, str | None]]) -> Markup:
    """The body of a run page's table of changes against the baseline: (ChangeRecord, link to a
    cell page of its line or None)."""
    out = []
    for ch, link in notable:
        k = ch.key
        subtest = f'<a href="{text(link)}">{text(k.subtest)}</a>' if link else text(k.subtest)
        out.append(
            f'<tr><td>{cls(ch.change)}</td><td class="mono">{text(k.rev)}</td>'
            f"<td>{text(k.variant) if k.variant else '-'}</td><td>{text(k.host)}</td>"
            f"<td>{text(k.job)}</td>\n<td>{subtest}</td>\n"
            f"<td>{int(ch.passes)}/{int(ch.fails)}/{int(ch.errors)}</td>"
            f"<td>{text(ch.baseline_status) if ch.baseline_status else '-'}</td></tr>\n"
        )
    return Markup("".join(out))  # noqa: S704 (escaped parts)


def _pooled(p: Any) -> str:
    if p is None:
        return "-"
    status = p.status
    return (
        f'<span class="st st-{css(status)}">{text(status)}</span> '
        f"{int(p.passes)}/{int(p.passes + p.fails)}"
    )


def diff_rows(
    d: Any, cell_link: Callable[[int, tuple[str, ...], str | None], str | None]
) -> Markup:
    """The body of a diff page's table (a kbisect.browser.diff.RunDiff's changed rows), each
    side linked to a cell of its line when there is one."""
    out = []
    for r in d.changed:
        line = r.line
        revs = (
            text(r.rev_b or "")
            if r.rev_a == r.rev_b
            else f"{text(r.rev_a or '')} &#8594; {text(r.rev_b or '')}"
        )
        sides = []
        for run_id, rev, p in ((d.a.id, r.rev_a, r.a), (d.b.id, r.rev_b, r.b)):
            link = cell_link(run_id, line, rev)
            shown = _pooled(p)
            sides.append(f'<a href="{text(link)}">{shown}</a>' if link else shown)
        out.append(
            f"<tr><td>{cls(r.kind)}</td><td>{text(line[0])}</td>"
            f'<td class="mono">{revs}</td>\n'
            f"<td>{text(line[1]) if line[1] else '-'}</td><td>{text(line[2])}</td>"
            f"<td>{text(line[3])}</td><td>{text(line[4])}</td><td>{text(line[5])}</td>\n"
            f"<td>{sides[0]}</td>\n<td>{sides[1]}</td></tr>\n"
        )
    return Markup("".join(out))  # noqa: S704 (escaped parts)
