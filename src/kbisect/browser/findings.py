"""A findings report: an experiment's question answered from every run of its variants in the
store (``kbisect report``, and the page findings/NAME.html of the results browser).

``gather`` reads the store once (through a tally of the cells, kbisect.browser.findings_tally)
and returns plain data: per variant and subtest the results
pooled over all runs, revisions and hosts (and per host), the expectation and whether what was
seen is what was expected, how failures failed (errno, signal, kernel evidence) with a link to
the first cell that shows it, the kernels and Xen versions, and each host's fingerprint. The
Markdown (kbisect.browser.findings_text) and the page are written from that data alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kbisect.browser.expect import Expectations, Verdict, expectation, expectations_of, judge
from kbisect.browser.findings_tally import Tally, tally
from kbisect.browser.fragments import subtest_anchor
from kbisect.config.model import Experiment, Variant, VariantOrigin
from kbisect.lab.probe import FINGERPRINT_KEYS
from kbisect.pipeline.regressions import CELL, Pool
from kbisect.results.model import RunRecord
from kbisect.results.queries import StoreQueries
from kbisect.results.rates import Rate

FINDINGS_DIR = "findings"
"""The findings pages' directory in the site (findings/NAME.html)."""


def findings_page(experiment: str) -> str:
    return f"{FINDINGS_DIR}/{experiment}.html"


@dataclass(frozen=True)
class CellLink:
    """A cell (and a subtest's row on its page), relative to the site's root."""

    run: int
    cell: int
    subtest: str = ""

    @property
    def page(self) -> str:
        anchor = f"#{subtest_anchor(self.subtest)}" if self.subtest else ""
        return f"run/{self.run}/cell-{self.cell}.html{anchor}"


@dataclass
class SubtestFinding:
    """One subtest of one variant, pooled over runs, revisions and hosts."""

    subtest: str
    expected: str
    """The expectation as the experiment says it ("" when it says nothing)."""
    verdict: Verdict
    total: Pool
    by_host: dict[str, Pool]
    failed_with: list[tuple[str, str, CellLink]] = field(default_factory=list)
    """Each distinct way it failed (EFAULT, SIGBUS, a kernel signature), its detail, and the
    first cell that shows it."""

    @property
    def rate(self) -> Rate:
        return self.total.rate


@dataclass
class VariantFindings:
    name: str
    description: str
    patches: list[str]
    origin: VariantOrigin | None
    cells: int = 0
    subtests: list[SubtestFinding] = field(default_factory=list)
    known: bool = True
    """In the experiment as configured (False: cells of a variant since removed)."""


@dataclass(frozen=True)
class RevisionFacts:
    """A revision tested, with what its cells say it was."""

    rev: str
    commits: tuple[str, ...]
    dom0_releases: tuple[str, ...]
    xen_versions: tuple[str, ...]
    cells: int


@dataclass(frozen=True)
class HostFacts:
    """A host: its cells and each fingerprint fact's distinct values over them."""

    host: str
    cells: int
    facts: tuple[tuple[str, tuple[str, ...]], ...]


@dataclass(frozen=True)
class RunFacts:
    id: int
    kind: str
    pipeline: str | None
    started: str
    cells: int


@dataclass
class Findings:
    experiment: str
    title: str
    question: str
    origin: str
    since: int | None
    host: str | None
    variants: list[VariantFindings]
    hosts: list[str]
    runs: list[RunFacts]
    revisions: list[RevisionFacts]
    host_facts: list[HostFacts]
    cells: int

    def verdicts(self) -> dict[Verdict, int]:
        """How many variant x subtest results are expected, unexpected, ..."""
        out = {v: 0 for v in Verdict}
        for variant in self.variants:
            for sub in variant.subtests:
                out[sub.verdict] += 1
        return out

    def unexpected(self) -> list[tuple[VariantFindings, SubtestFinding]]:
        return [
            (v, s) for v in self.variants for s in v.subtests if s.verdict is Verdict.UNEXPECTED
        ]


def gather(
    store: StoreQueries,
    experiment: Experiment,
    *,
    since: int | None = None,
    host: str | None = None,
) -> Findings:
    """What the store says about ``experiment`` (from run ``since`` on, on ``host`` only)."""
    cells = store.experiment_cells(experiment.name, since_run=since, host=host)
    found = tally(cells, f"{experiment.name}/")
    return findings_of(experiment, found, store.runs(), since=since, host=host)


def findings_of(
    experiment: Experiment,
    cells: Tally,
    runs: Iterable[RunRecord],
    *,
    since: int | None = None,
    host: str | None = None,
) -> Findings:
    """The findings the tally of the experiment's cells gives (``runs``: the store's)."""
    expectations = expectations_of({experiment.name: experiment})
    prefix = f"{experiment.name}/"
    by_variant: dict[str, dict[str, Any]] = cells["variants"]
    variants = [_variant_of(v, True) for v in experiment.variants]
    configured = {v.name for v in variants}
    variants += [
        VariantFindings(name, "(not in the experiment any more)", [], None, known=False)
        for name in sorted(set(by_variant) - configured)
    ]
    for found in variants:
        mine = by_variant.get(found.name)
        if mine is not None:
            found.cells = mine["cells"]
            found.subtests = _subtests(mine, expectations, prefix + found.name)
    return Findings(
        experiment=experiment.name,
        title=experiment.title,
        question=experiment.question.strip(),
        origin=experiment.origin.strip(),
        since=since,
        host=host,
        variants=variants,
        hosts=sorted(cells["hosts"]),
        runs=_runs(cells["runs"], {r.id: r for r in runs}),
        revisions=_revisions(cells["revs"]),
        host_facts=_hosts(cells["hosts"]),
        cells=sum(v["cells"] for v in by_variant.values()),
    )


def _variant_of(variant: Variant, known: bool) -> VariantFindings:
    return VariantFindings(
        variant.name, variant.description, list(variant.patches), variant.origin, known=known
    )


def _subtests(
    variant: dict[str, Any], expectations: Expectations, name_of_variant: str
) -> list[SubtestFinding]:
    """A variant's subtests in the order its job runs them (kernel evidence's ``cell`` last)."""
    order = dict.fromkeys(sorted(variant["order"], key=lambda name: variant["order"][name]))
    totals: dict[str, Pool] = {}
    hosts: dict[str, dict[str, Pool]] = {}
    for name, by_host in variant["pools"].items():
        order.setdefault(name, None)
        for host, counts in by_host.items():
            _add(totals.setdefault(name, Pool()), Pool(*counts))
            _add(hosts.setdefault(name, {}).setdefault(host, Pool()), Pool(*counts))
    if CELL in order:
        order[CELL] = order.pop(CELL)
        # kernel evidence is counted over every cell: one whose subtests ran and whose kernel
        # reported nothing passes it (the pools count only cells with evidence or no subtests)
        for host, clean in variant["clean"].items():
            totals[CELL].passes += clean
            hosts[CELL].setdefault(host, Pool()).passes += clean
    out = []
    for name in order:
        total = totals[name]
        expected = expectation(expectations, name_of_variant, name)
        out.append(
            SubtestFinding(
                subtest=name,
                expected=str(expected) if expected is not None else "",
                verdict=judge(expected, total.passes, total.fails, total.skips),
                total=total,
                by_host=dict(sorted(hosts[name].items())),
                failed_with=[
                    (tag, detail, CellLink(run, cell_id, "" if name == CELL else name))
                    for tag, cell_id, detail, run in variant["ways"].get(name, [])
                ],
            )
        )
    return out


def _add(into: Pool, counts: Pool) -> None:
    into.passes += counts.passes
    into.fails += counts.fails
    into.errors += counts.errors
    into.skips += counts.skips


def _runs(counts: dict[str, int], runs: dict[int, RunRecord]) -> list[RunFacts]:
    out = []
    for run_id, n in sorted((int(run), n) for run, n in counts.items()):
        run = runs.get(run_id)
        started = run.started.strftime("%Y-%m-%d %H:%M UTC") if run else "-"
        kind, pipeline = (run.kind, run.pipeline) if run else ("-", None)
        out.append(RunFacts(run_id, kind, pipeline, started, n))
    return out


def _revisions(revs: dict[str, dict[str, Any]]) -> list[RevisionFacts]:
    return [
        RevisionFacts(
            rev,
            tuple(sorted(facts["commits"])),
            tuple(sorted(facts["dom0"])),
            tuple(sorted(facts["xen"])),
            facts["cells"],
        )
        for rev, facts in sorted(revs.items())
    ]


def _hosts(hosts: dict[str, dict[str, Any]]) -> list[HostFacts]:
    """Each host's fingerprint facts (the tally left the build's own word, kbisect.build=KEY,
    out of the dom0 command line, so that one line stands for all the builds a host booted)."""
    out = []
    for host, facts in sorted(hosts.items()):
        values: dict[str, list[str]] = facts["facts"]
        known = [k for k in FINGERPRINT_KEYS if k in values]
        keys = known + sorted(set(values) - set(known))
        out.append(
            HostFacts(host, facts["cells"], tuple((k, tuple(sorted(values[k]))) for k in keys))
        )
    return out


def as_json(findings: Findings, links: str = "") -> dict[str, Any]:
    """The findings as one JSON document (``kbisect report --json``); cell links under
    ``links`` (the site's address, or a path to it)."""

    def counts(p: Pool) -> dict[str, int]:
        return {"passes": p.passes, "fails": p.fails, "errors": p.errors, "skips": p.skips}

    return {
        "experiment": findings.experiment,
        "title": findings.title,
        "question": findings.question,
        "since": findings.since,
        "host": findings.host,
        "cells": findings.cells,
        "hosts": findings.hosts,
        "verdicts": {v.value: n for v, n in findings.verdicts().items()},
        "variants": [
            {
                "name": v.name,
                "description": v.description,
                "patches": v.patches,
                "origin": None if v.origin is None else _origin(v.origin),
                "in_experiment": v.known,
                "cells": v.cells,
                "subtests": [
                    {
                        "subtest": s.subtest,
                        "expected": s.expected or None,
                        "verdict": s.verdict.value,
                        **counts(s.total),
                        "interval": list(s.rate.interval) if s.rate.runs else None,
                        "hosts": {h: counts(p) for h, p in s.by_host.items()},
                        "failed_with": [
                            {"how": tag, "detail": detail, "cell": links + link.page}
                            for tag, detail, link in s.failed_with
                        ],
                    }
                    for s in v.subtests
                ],
            }
            for v in findings.variants
        ],
        "revisions": [vars(r) for r in findings.revisions],
        "host_facts": {h.host: {"cells": h.cells, **dict(h.facts)} for h in findings.host_facts},
        "runs": [vars(r) for r in findings.runs],
    }


def _origin(o: VariantOrigin) -> dict[str, str]:
    return {"subject": o.subject, "author": o.author, "date": o.date, "message_id": o.message_id}
