"""The findings pages of the results browser (``findings/NAME.html``): an experiment's findings
(kbisect.browser.findings) for every experiment of the project that has results, rendered when
any run's content or the experiment changed, and listed on the index.

A page's findings come from a tally of its cells per run (kbisect.browser.findings_tally), kept
in ``.findings/NAME.json`` in the site with each run's signature: a render reads the cells of
the runs that changed since the last one only, not every cell of the experiment again."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kbisect.browser.findings import FINDINGS_DIR, Findings, findings_of, findings_page
from kbisect.browser.findings_tally import merge, tally
from kbisect.browser.findings_text import failed_of, observed, summary
from kbisect.browser.manifest import Manifest
from kbisect.browser.pages import key_of
from kbisect.browser.site import Site, remove_stale
from kbisect.config.model import Experiment
from kbisect.results.model import CellRecord
from kbisect.results.store import ResultsStore


def _same(text: str) -> str:
    return text


def render_findings(
    site: Site,
    store: ResultsStore,
    manifest: Manifest,
    layout: str,
    experiments: Mapping[str, Experiment],
    run_signatures: Mapping[int, str],
    removed: list[str],
) -> int:
    """Render the findings page of each experiment with results whose key (the experiment and
    every run's signature) changed; remove the others' pages; how many were not rendered."""
    skipped = 0
    runs = sorted(run_signatures.items())
    kept: dict[str, dict[str, int | str]] = {}
    for name, experiment in sorted(experiments.items()):
        key = key_of(layout, repr(experiment), runs)
        old = manifest.findings.get(name)
        if old is not None and old["key"] == key:
            skipped += 1 if old["cells"] else 0
            kept[name] = old
            continue
        tallies = site.site / TALLIES_DIR / f"{name}.json"
        # a manifest without the page (a first or --full render): tally every run anew
        found = _findings(store, experiment, tallies, layout, runs, trusted=old is not None)
        kept[name] = {"key": key, "cells": found.cells}
        if not found.cells:
            continue
        site.render(
            "findings.html.j2",
            findings_page(name),
            f=found,
            verdicts={v.name.lower(): n for v, n in found.verdicts().items()},
            summaries={v.name: summary(v, _same, _same) for v in found.variants},
            unexpected=found.unexpected(),
            observed=observed,
            failed_of=failed_of,
        )
    manifest.findings = kept
    pages = {f"{name}.html" for name, entry in kept.items() if entry["cells"]}
    remove_stale(site.site / FINDINGS_DIR, pages, removed, f"{FINDINGS_DIR}/")
    return skipped


TALLIES_DIR = ".findings"
"""Where the tallies per run are kept in the site (a dot directory: never served)."""


def _findings(
    store: ResultsStore,
    experiment: Experiment,
    path: Path,
    layout: str,
    runs: list[tuple[int, str]],
    *,
    trusted: bool,
) -> Findings:
    """The experiment's findings from the tallies kept in ``path`` (when ``trusted`` and made
    with this ``layout``), the runs whose signature changed tallied anew; the file rewritten."""
    kept: dict[str, list[Any]] = {}
    try:
        data = json.loads(path.read_text()) if trusted else {}
        if data.get("layout") == layout:
            kept = data["runs"]
    except (OSError, ValueError, AttributeError):
        pass
    tallies = {}
    stale = []
    for run_id, signature in runs:
        old = kept.get(str(run_id))
        if old is not None and old[0] == signature:
            tallies[str(run_id)] = old
        else:
            stale.append(run_id)
    cells = store.experiment_cells(experiment.name, run_ids=stale) if stale else []
    by_run: dict[int, list[CellRecord]] = {run_id: [] for run_id in stale}
    for cell in cells:
        by_run[int(cell.run_id or 0)].append(cell)
    prefix = f"{experiment.name}/"
    signatures = dict(runs)
    for run_id, mine in by_run.items():
        tallies[str(run_id)] = [signatures[run_id], tally(mine, prefix)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"layout": layout, "runs": tallies}, separators=(",", ":")))
    tmp.replace(path)
    merged = merge(t for _, t in tallies.values())
    return findings_of(experiment, merged, store.runs())


def findings_links(manifest: Manifest) -> list[tuple[str, str, int]]:
    """(experiment, page, cells) for the index: the experiments with a findings page."""
    return [
        (name, findings_page(name), int(entry["cells"]))
        for name, entry in sorted(manifest.findings.items())
        if entry["cells"]
    ]
