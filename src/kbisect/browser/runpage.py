"""A run's pages: the run page (the matrix of revision x variant by host x job, the notable
changes) and a page per revision (variants by subtest), and what they show."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from kbisect.browser.expect import Expectations, expectation, failures_of
from kbisect.browser.fragments import matrix_rows, notable_rows, variant_cells, variant_rows
from kbisect.browser.pages import (
    CLASS_ORDER,
    NOTABLE_MAX,
    STATUSES,
    meta_items,
    rev_page,
)
from kbisect.browser.safety import visible
from kbisect.browser.site import Site
from kbisect.browser.verdict import RunVerdict, verdict_html
from kbisect.pipeline.regressions import CELL, Pool
from kbisect.results.model import (
    CellRecord,
    ChangeRecord,
    RegressionRecord,
    ResultStatus,
    RunRecord,
    SubtestKey,
)


@dataclass
class RunJob:
    """A run whose pages are to be rendered, and what they show of other runs."""

    run: RunRecord
    key: str
    baseline: RunRecord | None
    previous: int | None
    window: list[int]
    """Earlier runs whose cells the history on this run's cell pages shows, oldest first."""
    regressions: list[RegressionRecord]


def render_run_page(
    site: Site,
    job: RunJob,
    cells: Sequence[CellRecord],
    changes: Sequence[ChangeRecord],
    counts: list[list[Any]],
    junit: str | None,
    verdict: RunVerdict,
    trend: Markup,
) -> None:
    """run/RUN/index.html: the verdict, the matrix, the notable changes, links to the revisions'
    pages."""
    run = job.run
    first_cell: dict[tuple[str, ...], int] = {}
    for c in cells:
        assert c.id is not None
        first_cell.setdefault((c.tree, c.rev, c.variant, c.profile, c.host, c.job), c.id)
    columns, rows = matrix(cells, changes)
    revs = revisions(cells)
    many_trees = len({tree for tree, _ in revs}) > 1
    rev_pages = [
        (f"{tree}:{rev}" if many_trees else rev, rev_page(run.id, tree, rev).split("/")[-1])
        for tree, rev in revs
    ]
    notable, more = notable_changes(changes, first_cell.get)
    kind = run.kind + (f" ({run.pipeline})" if run.pipeline else "")
    title = " · ".join([f"run {run.id}", kind, *list(dict.fromkeys(r for _, r in revs))[:3]])
    if verdict.regressions:
        n = len(verdict.regressions)
        title += f" · {n} new regression{'s' if n > 1 else ''}"
    site.render(
        "run.html.j2",
        f"run/{run.id}/index.html",
        title=title,
        run=run,
        meta=meta_items(run.meta),
        counts=counts,
        baseline=job.baseline.id if job.baseline else None,
        previous=job.previous,
        rev_pages=rev_pages,
        junit=junit,
        regressions=job.regressions,
        verdict=verdict_html(verdict, job.baseline is not None),
        trend=trend,
        statuses=STATUSES,
        classes=CLASS_ORDER,
        columns=columns,
        matrix_rows=matrix_rows(rows),
        notable=notable,
        notable_rows=notable_rows(notable),
        notable_more=more,
        script=site.script,
    )


def render_rev_pages(
    site: Site,
    run: RunRecord,
    cells: Sequence[CellRecord],
    pools: Mapping[SubtestKey, Pool],
    expectations: Expectations,
) -> None:
    """run/RUN/rev-REV-H.html: a revision's variants by subtest (``pools``: the run's), each
    entry marked expected or unexpected, with how it failed."""
    pools_at: dict[tuple[str, str], dict[SubtestKey, Pool]] = {}
    for k, p in pools.items():
        pools_at.setdefault((k[0], k[1]), {})[k] = p
    for tree, rev in revisions(cells):
        at_rev = [c for c in cells if c.tree == tree and c.rev == rev]
        mine = pools_at.get((tree, rev), {})
        variants, subtests, table = variant_table_of(mine, at_rev, tree, rev)
        by_variant: dict[str, list[CellRecord]] = {}
        for c in at_rev:
            by_variant.setdefault(c.variant, []).append(c)
        expected = {
            (name, v): expectation(expectations, v, name) for name in subtests for v in variants
        }
        site.render(
            "variants.html.j2",
            rev_page(run.id, tree, rev),
            title=f"{rev} · variants by subtest · run {run.id}",
            run=run,
            tree=tree,
            rev=rev,
            variants=variants,
            rows=variant_rows(variants, subtests, table, expected, failures_of(at_rev)),
            cell_rows=variant_cells(variants, by_variant),
            expectations=[(v, expectations[v]) for v in variants if v in expectations],
        )


def revisions(cells: Iterable[CellRecord]) -> list[tuple[str, str]]:
    """The (tree, revision)s of a run's cells, in their order."""
    return list(dict.fromkeys((c.tree, c.rev) for c in cells))


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
