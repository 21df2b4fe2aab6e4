"""A findings report: an experiment's question answered from every run of its variants in the
store (``kbisect report``, and the page findings/NAME.html of the results browser).

``gather`` reads the store once and returns plain data: per variant and subtest the results
pooled over all runs, revisions and hosts (and per host), the expectation and whether what was
seen is what was expected, how failures failed (errno, signal, kernel evidence) with a link to
the first cell that shows it, the kernels and Xen versions, and each host's fingerprint. The
Markdown (kbisect.browser.findings_text) and the page are written from that data alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kbisect.browser.expect import (
    Expectations,
    Verdict,
    expectation,
    expectations_of,
    failures_of,
    judge,
)
from kbisect.browser.fragments import subtest_anchor
from kbisect.config.model import Experiment, Variant, VariantOrigin
from kbisect.lab.probe import BUILD_PARAM, FINGERPRINT_KEYS
from kbisect.pipeline.regressions import CELL, Pool, pool
from kbisect.results.model import CellRecord, ResultStatus, RunRecord
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
    runs = {r.id: r for r in store.runs()}
    expectations = expectations_of({experiment.name: experiment})
    prefix = f"{experiment.name}/"
    by_variant: dict[str, list[CellRecord]] = {}
    for cell in cells:
        by_variant.setdefault(cell.variant.removeprefix(prefix), []).append(cell)
    variants = [_variant_of(v, True) for v in experiment.variants]
    configured = {v.name for v in variants}
    variants += [
        VariantFindings(name, "(not in the experiment any more)", [], None, known=False)
        for name in sorted(set(by_variant) - configured)
    ]
    for found in variants:
        mine = by_variant.get(found.name, [])
        found.cells = len(mine)
        found.subtests = _subtests(mine, expectations, prefix + found.name)
    return Findings(
        experiment=experiment.name,
        title=experiment.title,
        question=experiment.question.strip(),
        origin=experiment.origin.strip(),
        since=since,
        host=host,
        variants=variants,
        hosts=sorted({c.host for c in cells}),
        runs=_runs(cells, runs),
        revisions=_revisions(cells),
        host_facts=_hosts(cells),
        cells=len(cells),
    )


def _variant_of(variant: Variant, known: bool) -> VariantFindings:
    return VariantFindings(
        variant.name, variant.description, list(variant.patches), variant.origin, known=known
    )


def _subtests(
    cells: list[CellRecord], expectations: Expectations, variant: str
) -> list[SubtestFinding]:
    """A variant's subtests in the order its job runs them (kernel evidence's ``cell`` last)."""
    order: dict[str, None] = {}
    for cell in cells:
        order.update((s.name, None) for s in cell.subtests)
    totals: dict[str, Pool] = {}
    hosts: dict[str, dict[str, Pool]] = {}
    for key, counts in pool(cells).items():
        order.setdefault(key.subtest, None)
        _add(totals.setdefault(key.subtest, Pool()), counts)
        _add(hosts.setdefault(key.subtest, {}).setdefault(key.host, Pool()), counts)
    if CELL in order:
        order[CELL] = order.pop(CELL)
        _clean_cells_pass(cells, totals[CELL], hosts[CELL])
    run_of = {int(c.id or 0): int(c.run_id or 0) for c in cells}
    failures = failures_of(cells)
    out = []
    for name in order:
        total = totals[name]
        expected = expectation(expectations, variant, name)
        ways = failures.get((name, variant), [])
        out.append(
            SubtestFinding(
                subtest=name,
                expected=str(expected) if expected is not None else "",
                verdict=judge(expected, total.passes, total.fails, total.skips),
                total=total,
                by_host=dict(sorted(hosts[name].items())),
                failed_with=[
                    (tag, detail, CellLink(run_of[cid], cid, "" if name == CELL else name))
                    for tag, cid, detail in ways
                ],
            )
        )
    return out


def _clean_cells_pass(cells: list[CellRecord], total: Pool, hosts: dict[str, Pool]) -> None:
    """Kernel evidence is counted over every cell: a cell whose subtests ran and whose kernel
    reported nothing passes it (the pool counts only the cells with evidence or no subtests)."""
    for cell in cells:
        if cell.subtests and not (cell.evidence and cell.status is ResultStatus.FAIL):
            total.passes += 1
            hosts.setdefault(cell.host, Pool()).passes += 1


def _add(into: Pool, counts: Pool) -> None:
    into.passes += counts.passes
    into.fails += counts.fails
    into.errors += counts.errors
    into.skips += counts.skips


def _runs(cells: Iterable[CellRecord], runs: dict[int, RunRecord]) -> list[RunFacts]:
    counts: dict[int, int] = {}
    for cell in cells:
        counts[int(cell.run_id or 0)] = counts.get(int(cell.run_id or 0), 0) + 1
    out = []
    for run_id, n in sorted(counts.items()):
        run = runs.get(run_id)
        started = run.started.strftime("%Y-%m-%d %H:%M UTC") if run else "-"
        kind, pipeline = (run.kind, run.pipeline) if run else ("-", None)
        out.append(RunFacts(run_id, kind, pipeline, started, n))
    return out


def _distinct(values: Iterable[str | None]) -> tuple[str, ...]:
    return tuple(sorted({v for v in values if v}))


def _revisions(cells: list[CellRecord]) -> list[RevisionFacts]:
    by_rev: dict[str, list[CellRecord]] = {}
    for cell in cells:
        by_rev.setdefault(cell.rev, []).append(cell)
    return [
        RevisionFacts(
            rev,
            _distinct(c.commit[:12] if c.commit else None for c in mine),
            _distinct(c.fingerprint.get("dom0_release") for c in mine),
            _distinct(c.fingerprint.get("xen_version") for c in mine),
            len(mine),
        )
        for rev, mine in sorted(by_rev.items())
    ]


PER_CELL_FACTS = ("lava_job", "lava_job_url")  # which LAVA job ran a cell: not a host fact


def _hosts(cells: list[CellRecord]) -> list[HostFacts]:
    """Each host's fingerprint facts, the build's own word (kbisect.build=KEY) left out of
    the dom0 command line, so that one line stands for all the builds a host booted."""
    by_host: dict[str, list[CellRecord]] = {}
    for cell in cells:
        by_host.setdefault(cell.host, []).append(cell)
    out = []
    for host, mine in sorted(by_host.items()):
        values: dict[str, set[str]] = {}
        for cell in mine:
            for key, value in cell.fingerprint.items():
                if key in PER_CELL_FACTS:
                    continue
                if key == "dom0_cmdline":
                    value = " ".join(w for w in value.split() if not w.startswith(BUILD_PARAM))
                if value:
                    values.setdefault(key, set()).add(value)
        known = [k for k in FINGERPRINT_KEYS if k in values]
        keys = known + sorted(set(values) - set(known))
        facts = tuple((k, tuple(sorted(values[k]))) for k in keys)
        out.append(HostFacts(host, len(mine), facts))
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
