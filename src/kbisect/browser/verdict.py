"""A run's verdict, what its page leads with: new regressions, fixed, unexpected results and
infrastructure errors, each naming the subtests with how they failed and their detail, linked to
the subtest on a cell page. Built in Python (a page per run), every value through ``text()``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup

from kbisect.browser.expect import Expectations, Verdict, expectation, failure_tag, judge
from kbisect.browser.fragments import cls, subtest_anchor, text
from kbisect.pipeline.regressions import CELL, Pool
from kbisect.results.model import CellRecord, Change, ChangeRecord, ResultStatus, SubtestKey
from kbisect.results.rates import Rate

LISTED_MAX = 40
"""At most this many findings are named per section (then "and N more")."""


@dataclass
class Finding:
    """One line of the verdict: a subtest somewhere, how it went, where to see it."""

    subtest: str
    where: str
    how: str
    detail: str
    link: str | None


@dataclass
class RunVerdict:
    regressions: list[Finding] = field(default_factory=list)
    fixed: list[Finding] = field(default_factory=list)
    unexpected: list[Finding] = field(default_factory=list)
    infra: list[Finding] = field(default_factory=list)
    judged: bool = False
    """Whether results were held against expectations."""

    def headline(self) -> str:
        parts = [
            (len(self.regressions), "new regression", "new regressions"),
            (len(self.fixed), "fixed", "fixed"),
            (len(self.unexpected), "unexpected result", "unexpected results"),
            (len(self.infra), "infrastructure error", "infrastructure errors"),
        ]
        said = [f"{n} {one if n == 1 else many}" for n, one, many in parts if n]
        if said:
            return ", ".join(said)
        return "nothing new: no regression" + (", nothing unexpected" if self.judged else "")


_FAILED = (ResultStatus.FAIL, ResultStatus.ERROR, ResultStatus.MISS)


def _where(rev: str, variant: str, host: str, job: str) -> str:
    return f"{rev} · {variant or '(as is)'} · {host}/{job}"


def _failures(cells: Sequence[CellRecord]) -> dict[tuple[str, ...], tuple[str, str, str]]:
    """Per subtest line (tree, rev, variant, profile, host, job, subtest): how its first failing
    result failed (tag, detail, link)."""
    out: dict[tuple[str, ...], tuple[str, str, str]] = {}
    for c in cells:
        if c.status is ResultStatus.PASS:
            continue
        base = (c.tree, c.rev, c.variant, c.profile, c.host, c.job)
        page = f"cell-{int(c.id or 0)}.html"
        for s in c.subtests:
            if s.status in _FAILED and (*base, s.name) not in out:
                tag = failure_tag(s.errno, s.signal, s.timed_out)
                if s.status is not ResultStatus.FAIL:
                    tag = s.status.value
                out[(*base, s.name)] = (tag, s.detail, f"{page}#{subtest_anchor(s.name)}")
        if (*base, CELL) not in out:
            tag = c.evidence[0].signature if c.evidence else c.status.value
            out[(*base, CELL)] = (tag, c.reason, page)
    return out


def run_verdict(
    cells: Sequence[CellRecord],
    changes: Sequence[ChangeRecord],
    pools: Mapping[SubtestKey, Pool],
    expectations: Expectations,
) -> RunVerdict:
    """What a run says, against its baseline (``changes``) and the experiments' expectations."""
    verdict = RunVerdict()
    failed = _failures(cells)
    for ch in changes:
        if ch.change not in (Change.REGRESSION, Change.FIXED):
            continue
        k = ch.key
        where = _where(k.rev, k.variant, k.host, k.job)
        if ch.change == Change.REGRESSION:
            tag, detail, link = failed.get(tuple(k), ("FAIL", "", ""))
            how = f"{tag}, failed {ch.fails} of {ch.passes + ch.fails}"
            if ch.passes:  # a flaky regression: its rate rose beyond doubt
                how += f" ({Rate(ch.fails, ch.passes + ch.fails).brief()})"
            verdict.regressions.append(Finding(k.subtest, where, how, detail, link or None))
        else:
            how = f"passed {ch.passes} of {ch.passes + ch.fails}"
            if ch.baseline_status:
                how += f"; {ch.baseline_status} in run {ch.baseline_run}"
            verdict.fixed.append(Finding(k.subtest, where, how, "", None))
    if expectations:
        verdict.judged = True
        verdict.unexpected = _unexpected(pools, expectations, failed)
    for c in cells:
        if c.status in (ResultStatus.ERROR, ResultStatus.MISS):
            where = _where(c.rev, c.variant, c.host, c.job) + f" #{int(c.repeat)}"
            page = f"cell-{int(c.id or 0)}.html"
            verdict.infra.append(Finding("cell", where, c.status.value, c.reason, page))
    return verdict


def _unexpected(
    pools: Mapping[SubtestKey, Pool],
    expectations: Expectations,
    failed: Mapping[tuple[str, ...], tuple[str, str, str]],
) -> list[Finding]:
    """Subtests whose results, pooled over repeats, hosts and jobs at a revision, are not what
    their variant is expected to do."""
    pooled: dict[tuple[str, str, str], Pool] = {}
    first: dict[tuple[str, str, str], SubtestKey] = {}
    for key, p in pools.items():
        if key.variant not in expectations:
            continue
        at = (key.rev, key.variant, key.subtest)
        into = pooled.get(at)
        if into is None:
            into = pooled[at] = Pool()
        into.passes += p.passes
        into.fails += p.fails
        into.skips += p.skips
        into.errors += p.errors
        if p.fails and at not in first:
            first[at] = key
    grouped: dict[tuple[str, str, str, str], list[Any]] = {}  # the same at several revisions
    for (rev, variant, subtest), p in pooled.items():
        want = expectation(expectations, variant, subtest)
        if judge(want, p.passes, p.fails, p.skips) is not Verdict.UNEXPECTED:
            continue
        k = first.get((rev, variant, subtest))
        tag, detail, link = failed.get(tuple(k), ("", "", "")) if k is not None else ("", "", "")
        group = grouped.setdefault(
            (variant, subtest, str(want), p.status), [[], 0, 0, tag, detail, link]
        )
        group[0].append(rev)
        group[1] += p.passes
        group[2] += p.passes + p.fails
    out = []
    for (variant, subtest, wanted, status), (
        revs,
        passes,
        runs,
        tag,
        detail,
        link,
    ) in grouped.items():
        how = f"expected {wanted}, got {status} ({passes} of {runs} passed"
        if status == "FLAKY" or wanted.startswith("flaky"):
            how += f"; fails {Rate(runs - passes, runs).brief()}"
        how += ")"
        out.append(
            Finding(
                subtest,
                f"{', '.join(revs)} · {variant}",
                f"{tag}, {how}" if tag else how,
                detail,
                link or None,
            )
        )
    return out


def verdict_html(verdict: RunVerdict, has_baseline: bool) -> Markup:
    """The verdict section of a run page."""
    bad = verdict.regressions or verdict.unexpected or verdict.infra
    out = [f'<p class="verdict{" bad" if bad else ""}">{text(verdict.headline())}</p>\n']
    if not has_baseline:
        out.append(
            '<p class="muted">No earlier run of this pipeline to compare with: nothing is '
            "new or fixed yet.</p>\n"
        )
    for label, css, findings in (
        ("New regressions", "REGRESSION", verdict.regressions),
        ("Fixed", "FIXED", verdict.fixed),
        ("Unexpected results", "UNEXPECTED", verdict.unexpected),
        ("Infrastructure errors", "INFRA", verdict.infra),
    ):
        if not findings:
            continue
        out.append(f'<h3>{cls(css)} {text(label)}</h3>\n<ul class="flat findings">\n')
        for f in findings[:LISTED_MAX]:
            name = text(f.subtest)
            if f.link:
                name = f'<a href="{text(f.link)}">{name}</a>'
            detail = f'<br><span class="detail">{text(f.detail)}</span>' if f.detail else ""
            out.append(
                f'<li><strong>{name}</strong> <span class="mono">{text(f.where)}</span>: '
                f"{text(f.how)}{detail}</li>\n"
            )
        if len(findings) > LISTED_MAX:
            out.append(f'<li class="muted">and {len(findings) - LISTED_MAX} more</li>\n')
        out.append("</ul>\n")
    return Markup("".join(out))  # noqa: S704 (escaped parts)
