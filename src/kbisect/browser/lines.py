"""Line pages: a cell line (tree, variant, profile, host, job) in every run, from the history
entries the manifest keeps (no run's cells are read for them).

``lines/H.html`` shows a line's newest LINE_PAGE_RUNS runs; ``lines/H-N.html`` runs
(N-1)*LINE_PAGE_RUNS+1 to N*LINE_PAGE_RUNS, full blocks only, so that a block's page does not
change once it is full.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from markupsafe import Markup

from kbisect.browser.manifest import Manifest
from kbisect.browser.pages import key_of, line_block, line_page
from kbisect.browser.site import Site
from kbisect.results.model import RunRecord

LINE_PAGE_RUNS = 100
"""A line's page shows its newest this many runs; older ones are in pages of this many."""

ByLine = dict[int, list[tuple[str, list[list[Any]]]]]
"""A run's entries by line index: (revision, repeats)."""


def render_lines(
    site: Site,
    manifest: Manifest,
    layout: str,
    runs: Sequence[RunRecord],
    started: Mapping[int, str],
    window_part: Mapping[int, str],
) -> int:
    """Render every line's pages whose key changed (a page's key is over the runs it shows:
    ``window_part``) and keep the keys in the manifest; how many were not rendered."""
    by_line: dict[int, list[int]] = {}
    for run in runs:
        for index in manifest.runs[str(run.id)]["lines"]:
            by_line.setdefault(index, []).append(run.id)
    run_lines: dict[int, ByLine] = {}

    def entries_by_line(run_id: int) -> ByLine:
        """A run's entries by line index (read from the manifest once a run)."""
        found = run_lines.get(run_id)
        if found is None:
            found = run_lines[run_id] = {}
            for i, rev, cells in manifest.packed_entries(run_id):
                found.setdefault(i, []).append((rev, cells))
        return found

    skipped = 0
    line_keys: dict[str, str] = {}
    for index, line_runs in by_line.items():
        line = manifest.lines[index]
        pages = _pages_of(line, line_runs)
        archive = [(page.label, page.relative.split("/")[1]) for page in pages[1:]]
        for page in pages:
            shown = "|".join(window_part[q] for q in page.runs)
            key = key_of(layout, line, page.block, len(pages) - 1, shown)
            line_keys[page.relative] = key
            if manifest.line_keys.get(page.relative) == key:
                skipped += 1
                continue
            rows_html = [
                site.history_row("../", q, started[q], rev, cells)
                for q in reversed(page.runs)
                for rev, cells in reversed(entries_by_line(q).get(index, ()))
            ]
            site.render(
                "line.html.j2",
                page.relative,
                line=list(line),
                rows=Markup("".join([f"<tr>{row}</tr>\n" for row in rows_html])),  # noqa: S704
                shown=len(rows_html),
                runs=len(line_runs),
                block=page.block,
                archive=archive,
                front=pages[0].relative.split("/")[1],
            )
    manifest.line_keys = line_keys
    return skipped


class _LinePage(NamedTuple):
    relative: str
    runs: list[int]
    block: int | None
    """None for the front page."""
    label: str
    """A block's runs, such as ``1-100``."""


def _pages_of(line: list[str], line_runs: list[int]) -> list[_LinePage]:
    """A line's pages: the front page (its newest runs), then one a full block of older runs."""
    blocks = len(line_runs) // LINE_PAGE_RUNS if len(line_runs) > LINE_PAGE_RUNS else 0
    pages = [_LinePage(line_page(line), line_runs[-LINE_PAGE_RUNS:], None, "")]
    pages += [
        _LinePage(
            line_block(line, k),
            line_runs[k * LINE_PAGE_RUNS : (k + 1) * LINE_PAGE_RUNS],
            k,
            f"{k * LINE_PAGE_RUNS + 1}-{(k + 1) * LINE_PAGE_RUNS}",
        )
        for k in range(blocks)
    ]
    return pages
