"""Cell lines and their history: a line (tree, variant, profile, host, job) run after run, as
the cell pages (the last HISTORY_RUNS runs) and the line pages (all runs) show it."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

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
