"""Cell lines and their history: a line (tree, variant, profile, host, job) run after run, as
the cell pages (the last HISTORY_RUNS runs) and the line pages (all runs) show it."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from kbisect.browser.pages import HISTORY_RUNS
from kbisect.browser.site import Site
from kbisect.results.model import CellRecord

Entry = tuple[list[str], str, list[list[Any]]]
"""One line (tree, variant, profile, host, job) of one run at one revision: its repeats as
[cell id, repeat, status]. JSON-friendly: it is kept in the manifest."""


def line_of(c: CellRecord) -> list[str]:
    return [c.tree, c.variant, c.profile, c.host, c.job]


def entries_of(cells: Iterable[CellRecord]) -> list[Entry]:
    """A run's cells as history entries: per line and revision, the repeats."""
    by: dict[tuple[str, ...], list[list[Any]]] = defaultdict(list)
    for c in cells:
        by[(*line_of(c), c.rev)].append([c.id, c.repeat, c.status.value])
    return [(list(k[:5]), k[5], sorted(v, key=lambda x: (x[1], x[0]))) for k, v in by.items()]


Lines = dict[tuple[str, ...], list[tuple[str, list[list[Any]]]]]
"""A run's entries by line: (revision, repeats), in the order of the run's cells."""


class History:
    """The lines of runs (read once a run) and the history rows of cell pages, kept across the
    runs one process renders: a run's rows are on the cell pages of up to HISTORY_RUNS runs."""

    def __init__(
        self,
        cells_of: Callable[[int], Sequence[CellRecord]],
        site: Site,
        started: Mapping[int, str],
        known: Mapping[int, list[Entry]],
    ) -> None:
        self.cells_of = cells_of
        """How to read a run's cells (for a run whose entries are not known)."""
        self.site = site
        self.started = started
        self.entries: dict[int, list[Entry]] = dict(known)
        self._lines: dict[int, Lines] = {}
        self._histories: dict[tuple[int, tuple[str, ...]], str] = {}
        self._run_rows: dict[tuple[int, tuple[str, ...]], tuple[list[str], list[str]]] = {}

    def add(self, run_id: int, cells: Iterable[CellRecord]) -> None:
        """The entries of a run being rendered (from its cells, read now)."""
        self.entries[run_id] = entries_of(cells)
        self._lines.pop(run_id, None)

    def entries_of(self, run_id: int) -> list[Entry]:
        if run_id not in self.entries:
            self.entries[run_id] = entries_of(self.cells_of(run_id))
        return self.entries[run_id]

    def lines_of(self, run_id: int) -> Lines:
        found = self._lines.get(run_id)
        if found is None:
            found = {}
            for line, rev, cells in self.entries_of(run_id):
                found.setdefault(tuple(line), []).append((rev, cells))
            self._lines[run_id] = found
            if len(self._lines) > 4 * HISTORY_RUNS:
                self._lines.pop(next(iter(self._lines)))
        return found

    def first_cell(self, run_id: int, line: tuple[str, ...], rev: str) -> int | None:
        """The id of the first repeat of a line at a revision in a run."""
        for found_rev, repeats in self.lines_of(run_id).get(line, []):
            if found_rev == rev and repeats:
                return int(repeats[0][0])
        return None

    def rows(self, line: tuple[str, ...], run_id: int, runs: list[int]) -> str:
        """The rows of a cell page's history: the same for every cell of the line in a run."""
        key = (run_id, line)
        found = self._histories.get(key)
        if found is None:
            rows = []
            for q in reversed(runs[-HISTORY_RUNS:]):
                rows += self._rows_of_run(q, line)[1 if q == run_id else 0]
            found = "\n".join(rows)
            self._histories = {k: v for k, v in self._histories.items() if k[0] == run_id}
            self._histories[key] = found
        return found

    def _rows_of_run(self, run_id: int, line: tuple[str, ...]) -> tuple[list[str], list[str]]:
        """A run's rows in the history of a line, newest revision first: as an earlier run's,
        and as the current one's (the same rows on the cell pages of up to HISTORY_RUNS runs)."""
        key = (run_id, line)
        found = self._run_rows.get(key)
        if found is None:
            started = self.started.get(run_id, "-")
            cells = [
                self.site.history_row("../../", run_id, started, rev, repeats)
                for rev, repeats in reversed(self.lines_of(run_id).get(line, []))
            ]
            found = (
                [f"<tr>{c}</tr>" for c in cells],
                [f'<tr class="current">{c}</tr>' for c in cells],
            )
            if len(self._run_rows) > 50_000:
                self._run_rows.clear()
            self._run_rows[key] = found
        return found
