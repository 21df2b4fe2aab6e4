"""A findings report as Markdown: numbers first, then the question, the variants, every variant's
subtests by host, the kernels and hosts, and the runs; short enough to paste into a reply on a
mailing list, plain enough to read without rendering it.

Text from the store and the configuration (descriptions, details, fingerprints) is escaped so
that it cannot open a link, a tag or a table cell; names go in code spans.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from kbisect.browser.expect import Verdict
from kbisect.browser.findings import CellLink, Findings, SubtestFinding, VariantFindings
from kbisect.browser.safety import visible
from kbisect.pipeline.regressions import CELL, Pool

_SPECIAL = re.compile(r"([\\`*\[\]<>|])")
_SPACE = re.compile(r"\s+")
DETAIL_MAX = 120
"""Details (a failing subtest's message) are cut to this many characters."""


def plain(text: str, limit: int = 0) -> str:
    """``text`` on one line with Markdown's active characters escaped (control characters as
    escapes); cut to ``limit`` characters when given."""
    one = _SPACE.sub(" ", visible(text)).strip()
    if limit and len(one) > limit:
        one = one[: limit - 1] + "…"
    return _SPECIAL.sub(r"\\\1", one)


def code(name: str) -> str:
    """A name in a code span (backticks and pipes cannot end it early)."""
    return "`" + _SPACE.sub(" ", visible(name)).replace("`", "'").replace("|", "\\|") + "`"


def failed_of(p: Pool) -> str:
    """``2/3`` failed of the runs with a verdict, with errors and skips after; ``-`` for none."""
    text = f"{p.fails}/{p.passes + p.fails}" if p.passes + p.fails else ""
    extra = [f"{n} {word}" for n, word in ((p.errors, "error"), (p.skips, "skip")) if n]
    text = " ".join([text, *[f"+{e}" if text else e for e in extra]]).strip()
    return text or "-"


def observed(sub: SubtestFinding) -> str:
    """How often it failed, with the 95% interval when it did only sometimes."""
    rate = sub.rate
    text = failed_of(sub.total)
    return f"{text} ({rate.brief()})" if rate.flaky else text


def label(sub: SubtestFinding, name: Callable[[str], str]) -> str:
    """A subtest's name; kernel evidence (the pseudo-subtest ``cell``) says so."""
    return "kernel evidence" if sub.subtest == CELL else name(sub.subtest)


def failed_how(sub: SubtestFinding, text: Callable[[str], str] = plain) -> str:
    """``failed 1/7 (SIGBUS; 14%, 95% interval 3-51%)``: how often, how, and the rate's
    interval when it failed only sometimes."""
    said = [", ".join(dict.fromkeys(text(tag.rstrip(":")) for tag, _, _ in sub.failed_with))]
    if sub.rate.flaky:
        said.append(sub.rate.brief())
    more = "; ".join(part for part in said if part)
    return f"failed {failed_of(sub.total)}" + (f" ({more})" if more else "")


def markdown(findings: Findings, links: str | None = "") -> str:
    """The report; links to cells and runs start with ``links`` (the site's directory relative
    to where the report will be read, or its URL, ending in "/"; "" for the site's root)."""
    out = [f"# Findings: {findings.experiment}", "", plain(findings.title), ""]
    out += _numbers(findings)
    if not findings.cells:
        return "\n".join(out) + "\n"
    out += _answer(findings, links)
    out += ["## The question", "", *_quoted(findings.question), ""]
    out += _variants(findings)
    out += ["## Results by variant and subtest", ""]
    out += [
        "Failed/runs with a verdict, pooled over every run and revision, then per host; "
        "errors (infrastructure) and skips after. A cell is linked where each way of failing "
        "first shows.",
        "",
    ]
    for variant in findings.variants:
        out += _variant_table(variant, findings.hosts, links)
    out += _kernels_and_hosts(findings)
    out += _runs(findings, links)
    return "\n".join(out).rstrip("\n") + "\n"


def _numbers(f: Findings) -> list[str]:
    scope = []
    if f.since is not None:
        scope.append(f"from run {f.since} on")
    if f.host is not None:
        scope.append(f"on host {code(f.host)} only")
    where = f" ({', '.join(scope)})" if scope else ""
    if not f.cells:
        return [f"No results{where}: no run has tested this experiment's variants yet.", ""]
    runs = f.runs
    first, last = runs[0].started[:10], runs[-1].started[:10]
    dates = first if first == last else f"{first} to {last}"
    counts = f.verdicts()
    judged = sum(counts.values())
    said = [
        f"{counts[Verdict.EXPECTED]} as expected",
        f"{counts[Verdict.UNEXPECTED]} unexpected",
    ]
    said += [
        f"{counts[v]} {v.value}" for v in (Verdict.NO_VERDICT, Verdict.NOT_EXPECTED) if counts[v]
    ]
    hosts = ", ".join(code(h) for h in f.hosts)
    revs = ", ".join(code(r.rev) for r in f.revisions)
    return [
        f"{f.cells} cells in {_n(len(runs), 'run')} ({dates}){where} on "
        f"{_n(len(f.hosts), 'host')} ({hosts}), {_n(len(f.revisions), 'revision')} ({revs}).",
        f"{judged} variant/subtest results: {', '.join(said)}.",
        "",
    ]


def _n(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _answer(f: Findings, links: str | None) -> list[str]:
    out = ["| variant | cells | what it did |", "|---|---|---|"]
    for v in f.variants:
        out.append(f"| {code(v.name)} | {v.cells} | {summary(v)} |")
    out.append("")
    unexpected = f.unexpected()
    if not unexpected:
        out += ["Every result is what the experiment expects.", ""]
        return out
    out += ["Not what the experiment expects:", ""]
    for variant, sub in unexpected:
        first = f" {_link(sub.failed_with[0][2], links)}" if sub.failed_with else ""
        out.append(
            f"- {code(variant.name)} {label(sub, code)}: expected {sub.expected}, "
            f"{failed_how(sub)}{first}"
        )
    out.append("")
    return out


def summary(
    v: VariantFindings, name: Callable[[str], str] = code, text: Callable[[str], str] = plain
) -> str:
    """One line: what failed and how often, then how many passed (names and text as Markdown
    unless told otherwise)."""
    if not v.subtests:
        return "no results"
    failing = [s for s in v.subtests if s.total.fails]
    clean = [s for s in v.subtests if not s.total.fails and s.total.passes]
    parts = [f"{label(s, name)} {failed_how(s, text)}" for s in failing]
    if clean:
        runs = sorted({s.total.passes for s in clean})
        each = f"{runs[0]}" if len(runs) == 1 else f"{runs[0]}-{runs[-1]}"
        if not failing and len(clean) == len(v.subtests):
            parts.append(f"all {_n(len(clean), 'subtest')} passed ({each} runs each)")
        else:
            word = "subtest" if len(clean) == 1 else "subtests"
            parts.append(f"{len(clean)} other {word} passed ({each} runs each)")
    rest = len(v.subtests) - len(failing) - len(clean)
    if rest:
        parts.append(f"{rest} without a verdict")
    return "; ".join(parts)


def _link(link: CellLink, links: str | None) -> str:
    named = f"run {link.run} cell {link.cell}"
    return named if links is None else f"[{named}]({links}{link.page})"


def _quoted(text: str) -> list[str]:
    return [f"> {plain(line)}".rstrip() for line in text.splitlines()] or [">"]


def _variants(f: Findings) -> list[str]:
    out = [
        "## The variants",
        "",
        "| variant | patches | what it is | posted as |",
        "|---|---|---|---|",
    ]
    for v in f.variants:
        patches = ", ".join(code(p) for p in v.patches) or "none"
        origin = "-"
        if v.origin is not None:
            o = v.origin
            origin = f"{plain(o.subject)}, {plain(o.author)}, {plain(o.date)}, {code(o.message_id)}"
        out.append(f"| {code(v.name)} | {patches} | {plain(v.description)} | {origin} |")
    if f.origin:
        out += ["", *_quoted(f.origin)]
    out.append("")
    return out


def _variant_table(v: VariantFindings, hosts: list[str], links: str | None) -> list[str]:
    head = f"### {code(v.name)}: {_n(v.cells, 'cell')}"
    if not v.subtests:
        return [head, "", "No results.", ""]
    columns = ["subtest", "expected", "failed", *(code(h) for h in hosts), "verdict", "how"]
    out = [head, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for s in v.subtests:
        name = label(s, code)
        per_host = [failed_of(s.by_host[h]) if h in s.by_host else "-" for h in hosts]
        ways = "; ".join(
            f"{plain(tag.rstrip(':'))}{': ' + plain(detail, DETAIL_MAX) if detail else ''} "
            f"{_link(link, links)}"
            for tag, detail, link in s.failed_with
        )
        row = [name, s.expected or "-", observed(s), *per_host, s.verdict.value, ways or "-"]
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    return out


def _kernels_and_hosts(f: Findings) -> list[str]:
    out = ["## Kernels and hosts", "", "| revision | commit | dom0 kernel | Xen | cells |"]
    out.append("|---|---|---|---|---|")
    for r in f.revisions:
        row = [code(r.rev), _codes(r.commits), _codes(r.dom0_releases), _codes(r.xen_versions)]
        out.append(f"| {' | '.join(row)} | {r.cells} |")
    for h in f.host_facts:
        out += ["", f"Host {code(h.host)} ({_n(h.cells, 'cell')}):", ""]
        out += [f"- {key}: {'; '.join(plain(v) for v in values)}" for key, values in h.facts]
    out.append("")
    return out


def _codes(values: tuple[str, ...]) -> str:
    return ", ".join(code(v) for v in values) or "-"


def _runs(f: Findings, links: str | None) -> list[str]:
    out = ["## Runs", "", "| run | kind | started | cells |", "|---|---|---|---|"]
    for r in f.runs:
        kind = plain(r.kind + (f" {r.pipeline}" if r.pipeline not in (None, r.kind) else ""))
        run = str(r.id) if links is None else f"[{r.id}]({links}run/{r.id}/index.html)"
        out.append(f"| {run} | {kind} | {r.started} | {r.cells} |")
    return out
