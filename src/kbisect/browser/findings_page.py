"""The findings pages of the results browser (``findings/NAME.html``): an experiment's findings
(kbisect.browser.findings) for every experiment of the project that has results, rendered when
any run's content or the experiment changed, and listed on the index."""

from __future__ import annotations

from collections.abc import Mapping

from kbisect.browser.findings import FINDINGS_DIR, findings_page, gather
from kbisect.browser.findings_text import failed_of, observed, summary
from kbisect.browser.manifest import Manifest
from kbisect.browser.pages import key_of
from kbisect.browser.site import Site, remove_stale
from kbisect.config.model import Experiment
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
        found = gather(store, experiment)
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


def findings_links(manifest: Manifest) -> list[tuple[str, str, int]]:
    """(experiment, page, cells) for the index: the experiments with a findings page."""
    return [
        (name, findings_page(name), int(entry["cells"]))
        for name, entry in sorted(manifest.findings.items())
        if entry["cells"]
    ]
