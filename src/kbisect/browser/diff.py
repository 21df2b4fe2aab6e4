"""Two runs side by side: which subtests changed between them (repeats pooled).

Subtests are paired by their line (tree, variant, profile, host, job, subtest) and revision.
What is left over on a line, when each run tested it at exactly one other revision, is paired
too: a nightly whose newest tag moved on compares the new tag with the old one, as the
regression tracker does. Anything else is only in one of the runs.

The page of a diff is a run's ``diff.html`` (against its baseline) or ``diff/A-B.html``
(`results.diff A B`).
"""

from __future__ import annotations

import operator
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kbisect.browser.fragments import diff_rows
from kbisect.browser.history import History, entries_of
from kbisect.browser.pages import SITE_DIR, cell_page
from kbisect.browser.safety import visible
from kbisect.browser.site import Site
from kbisect.errors import UserError
from kbisect.pipeline.regressions import Pool, pool
from kbisect.results.model import CellRecord, RunRecord, SubtestKey
from kbisect.results.store import ResultsStore

Line = tuple[str, str, str, str, str, str]

BROKE = "BROKE"
FIXED = "FIXED"
CHANGED = "CHANGED"
NEW = "NEW"
GONE = "GONE"
ORDER = (BROKE, CHANGED, FIXED, NEW, GONE)
"""How a subtest differs, most important first."""


@dataclass(frozen=True)
class DiffRow:
    line: Line
    kind: str
    rev_a: str | None
    rev_b: str | None
    a: Pool | None
    b: Pool | None

    @property
    def cell(self) -> tuple[str, str, str, str, str, str]:
        """The cell line and revision (of B where there is one): what NEW and GONE group by."""
        t, v, p, h, j, _ = self.line
        return (t, self.rev_b or self.rev_a or "", v, p, h, j)


@dataclass(frozen=True)
class RunDiff:
    a: RunRecord
    b: RunRecord
    rows: list[DiffRow]
    same: int

    def count(self, kind: str) -> int:
        return sum(1 for r in self.rows if r.kind == kind)

    @property
    def changed(self) -> list[DiffRow]:
        return [r for r in self.rows if r.kind in (BROKE, CHANGED, FIXED)]

    def groups(self, kind: str) -> list[tuple[tuple[str, ...], list[DiffRow]]]:
        """NEW or GONE rows grouped by cell (a new revision adds every subtest at once)."""
        by: dict[tuple[str, ...], list[DiffRow]] = defaultdict(list)
        for r in self.rows:
            if r.kind == kind:
                by[r.cell].append(r)
        return sorted(by.items())

    def text(self) -> str:
        """The diff for a terminal (control characters in names shown as escapes)."""
        a, b = self.a, self.b
        out = [
            f"run {a.id} ({a.kind}, {a.started:%Y-%m-%d %H:%M}) -> "
            f"run {b.id} ({b.kind}, {b.started:%Y-%m-%d %H:%M})",
            f"{len(self.changed)} changed ({self.count(BROKE)} broke, {self.count(FIXED)} fixed, "
            f"{self.count(CHANGED)} other), {self.same} the same, {self.count(NEW)} only in run "
            f"{b.id}, {self.count(GONE)} only in run {a.id}",
        ]
        if self.changed:
            out.append("")
        for r in self.changed:
            t, v, p, h, j, s = r.line
            rev = r.rev_b if r.rev_a == r.rev_b else f"{r.rev_a}->{r.rev_b}"
            out.append(
                visible(
                    f"{r.kind:<8} {t} {rev} {v or '-'} {p} {h} {j} {s}: "
                    f"{describe(r.a)} -> {describe(r.b)}"
                )
            )
        for kind, run in ((NEW, b.id), (GONE, a.id)):
            groups = self.groups(kind)
            if groups:
                out.append("")
            for (t, rev, v, p, h, j), rows in groups:
                names = ", ".join(r.line[5] for r in rows[:6])
                more = f" and {len(rows) - 6} more" if len(rows) > 6 else ""
                out.append(
                    visible(
                        f"{kind:<8} {t} {rev} {v or '-'} {p} {h} {j}: {len(rows)} subtests only "
                        f"in run {run} ({names}{more})"
                    )
                )
        return "\n".join(out) + "\n"


def describe(p: Pool | None) -> str:
    """``FAIL 0/3``: the pooled status, then passes of the runs that gave a verdict."""
    if p is None:
        return "-"
    runs = p.passes + p.fails
    return f"{p.status} {p.passes}/{runs}" if runs else p.status


def kind_of(a: Pool | None, b: Pool | None) -> str | None:
    """How a subtest changed from A to B; None when it did not."""
    if a is None:
        return NEW
    if b is None:
        return GONE
    if a.status == b.status:
        return None
    if b.status == "FAIL" and a.status == "PASS":
        return BROKE
    if b.status == "PASS" and a.status in ("FAIL", "FLAKY"):
        return FIXED
    return CHANGED


_LINE = operator.itemgetter(0, 2, 3, 4, 5, 6)
"""SubtestKey.line, without a property call per key."""


def diff_pools(
    a_run: RunRecord,
    b_run: RunRecord,
    a_pools: dict[SubtestKey, Pool],
    b_pools: dict[SubtestKey, Pool],
) -> RunDiff:
    rows: list[DiffRow] = []
    same = 0
    # a subtest both runs tested at the same revision is paired with itself (most are, and
    # most of those have the same counts); only what is left over is paired by line
    left: dict[Line, tuple[dict[str, Pool], dict[str, Pool]]] = {}
    for key, pb in b_pools.items():
        pa = a_pools.get(key)
        if pa is None:
            left.setdefault(_LINE(key), ({}, {}))[1][key[1]] = pb
        elif (pa.passes, pa.fails, pa.errors) == (pb.passes, pb.fails, pb.errors):
            same += 1  # the same counts: the same status
        else:
            kind = kind_of(pa, pb)
            if kind is None:
                same += 1
            else:
                rows.append(DiffRow(_LINE(key), kind, key[1], key[1], pa, pb))
    for key, pa in a_pools.items():
        if key not in b_pools:
            left.setdefault(_LINE(key), ({}, {}))[0][key[1]] = pa
    for line, (in_a, in_b) in left.items():
        pairs: list[tuple[str | None, str | None]] = []
        if len(in_a) == 1 and len(in_b) == 1:  # each run tested the line at one other revision
            pairs.append((next(iter(in_a)), next(iter(in_b))))
        else:
            pairs += [(rev, None) for rev in in_a]
            pairs += [(None, rev) for rev in in_b]
        for rev_a, rev_b in pairs:
            one = in_a[rev_a] if rev_a is not None else None
            other = in_b[rev_b] if rev_b is not None else None
            kind = kind_of(one, other)
            if kind is None:
                same += 1
            else:
                rows.append(DiffRow(line, kind, rev_a, rev_b, one, other))
    rows.sort(key=lambda r: (ORDER.index(r.kind), r.line, r.rev_b or r.rev_a or ""))
    return RunDiff(a_run, b_run, rows, same)


def diff_cells(
    a_run: RunRecord, b_run: RunRecord, a: Iterable[CellRecord], b: Iterable[CellRecord]
) -> RunDiff:
    return diff_pools(a_run, b_run, pool(a), pool(b))


def diff_runs(store: ResultsStore, a: int, b: int) -> RunDiff:
    """Run A against run B (a UserError when either does not exist)."""
    a_run, b_run = _records(store, a, b)
    return diff_cells(a_run, b_run, store.cells(a), store.cells(b))


def _records(store: ResultsStore, a: int, b: int) -> tuple[RunRecord, RunRecord]:
    records = []
    for run_id in (a, b):
        record = store.get_run(run_id)
        if record is None:
            raise UserError(f"no run {run_id} in {store.path}")
        records.append(record)
    return records[0], records[1]


def render_diff(
    store: ResultsStore, a: int, b: int, out: Path | None = None
) -> tuple[RunDiff, Path]:
    """Compare run A with run B and write the page ``diff/A-B.html``; the diff and the page."""
    a_run, b_run = _records(store, a, b)
    cells_a, cells_b = store.cells(a), store.cells(b)
    d = diff_cells(a_run, b_run, cells_a, cells_b)
    site_dir = out if out is not None else store.results_dir / SITE_DIR
    site = Site(site_dir, store.results_dir)
    site.emit("style.css", site.env.get_template("style.css.j2").render())
    relative = f"diff/{a}-{b}.html"
    history = History(store.cells, site, {}, {a: entries_of(cells_a), b: entries_of(cells_b)})
    render_diff_page(site, relative, d, history)
    return d, site_dir / relative


def render_diff_page(site: Site, relative: str, d: RunDiff, history: History) -> None:
    """The page of a diff (a run's diff.html, or diff/A-B.html), linking the cells it names."""
    root = "../" * relative.count("/")

    def cell_link(run_id: int, line: tuple[str, ...], rev: str | None) -> str | None:
        cell = None if rev is None else history.first_cell(run_id, tuple(line[:5]), rev)
        return None if cell is None else f"{root}{cell_page(run_id, cell)}"

    site.render(
        "diff.html.j2",
        relative,
        d=d,
        run_link=lambda run_id: f"{root}run/{run_id}/index.html",
        changed_rows=diff_rows(d, cell_link),
    )
