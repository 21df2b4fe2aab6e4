"""What a nightly leaves behind: JUnit per cell and one merged file, a plain-text summary fit for
a mailing list (regressions first, then the variant comparison), and the auto-bisections."""

from __future__ import annotations

import re
from pathlib import Path

from kbisect.config import Pipeline, Project
from kbisect.errors import KbisectError
from kbisect.lab.lab import Lab
from kbisect.pipeline.regressions import CELL, Pool, variant_table
from kbisect.progress import Say
from kbisect.results.junit import write_junit as write_cells_junit
from kbisect.results.model import CellRecord, Change, ChangeRecord, ResultStatus
from kbisect.results.rates import Rate, percent
from kbisect.results.store import ResultsStore

_SAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def write_junit(store: ResultsStore, run_id: int) -> Path:
    """junit/<cell>.xml for every cell, and junit.xml with all of them (for CI systems). The
    revisions are named in the pipeline's order (the run's matrix), so the newest keeps the
    plain test names night after night (kbisect.results.junit)."""
    cells = store.cells(run_id)
    run = store.get_run(run_id)
    planned = run.meta.get("cells", []) if run is not None else []
    revisions = [(c["tree"], c["rev"]) for c in planned]
    base = store.results_dir / "runs" / str(run_id)
    for cell in cells:
        name = "-".join(
            _SAFE.sub("_", part)
            for part in (cell.tree, cell.rev, cell.variant, cell.profile, cell.host, cell.job)
        )
        write_cells_junit(
            [cell], base / "junit" / f"{name}-r{cell.repeat}.xml", results_dir=store.results_dir
        )
    return write_cells_junit(
        cells,
        base / "junit.xml",
        name=f"kbisect nightly {run_id}",
        revisions=revisions,
        results_dir=store.results_dir,
    )


def summary(
    store: ResultsStore, run_id: int, changes: list[ChangeRecord], bisections: dict[int, int]
) -> str:
    """The mail: counts, new regressions (with their bisections), open and fixed regressions,
    flaky and infrastructure trouble, then each revision's variants-by-subtest table."""
    run = store.get_run(run_id)
    assert run is not None
    cells = store.cells(run_id)
    counts = {s: sum(c.status is s for c in cells) for s in ResultStatus}
    lines = [
        f"kbisect nightly run {run_id} ({run.pipeline}), {len(cells)} cells: "
        + ", ".join(f"{n} {s.value}" for s, n in counts.items() if n)
    ]
    regressions = {r.id: r for r in store.regressions()}
    new = [r for r in regressions.values() if r.opened_run == run_id]
    by_class: dict[Change, list[ChangeRecord]] = {}
    for c in changes:
        by_class.setdefault(c.change, []).append(c)
    lines += ["", f"NEW REGRESSIONS: {len(new)}"]
    for r in new:
        tree, variant, _, host, job, subtest = r.line
        lines.append(
            f"  {tree} {r.opened_rev} {variant} {host} {job} {subtest}: fails; "
            f"passed at {r.good_rev or '?'} in the baseline"
        )
        bid = bisections.get(r.id)
        if bid is not None:
            lines.append(f"    {_bisection_line(store, bid)}")
    still_open = [r for r in regressions.values() if r.status == "open" and r.opened_run != run_id]
    if still_open:
        lines += ["", f"STILL OPEN: {len(still_open)}"]
        for r in still_open:
            lines.append(f"  {' '.join(r.line)} (since run {r.opened_run}, {r.opened_rev})")
    fixed = [r for r in regressions.values() if r.fixed_run == run_id]
    if fixed:
        lines += ["", f"FIXED: {len(fixed)}"]
        for r in fixed:
            lines.append(f"  {' '.join(r.line)} (open since run {r.opened_run}) at {r.fixed_rev}")
    for change in (Change.FLAKY, Change.STILL_FAILING, Change.NEVER_PASSED, Change.INFRA):
        items = by_class.get(change, [])
        if items:
            lines += ["", f"{change.value}: {len(items)}"]
            for c in items[:30]:
                k = c.key
                errors = f", {c.errors} infrastructure errors" if c.errors else ""
                lines.append(
                    f"  {k.rev} {k.variant} {k.host} {k.job} {k.subtest}: "
                    f"{Rate(c.fails, c.passes + c.fails).describe()}{errors}"
                )
    for rev in sorted({c.rev for c in cells}):
        at_rev = [c for c in cells if c.rev == rev]
        for host in sorted({c.host for c in at_rev}):  # hosts apart: each its own table
            lines += ["", *variant_lines([c for c in at_rev if c.host == host], rev)]
    lines += ["", f"results: {store.results_dir / 'runs' / str(run_id)}"]
    return "\n".join(lines) + "\n"


def variant_lines(cells: list[CellRecord], rev: str) -> list[str]:
    """Variants by subtest at one revision: `p/n` passes of runs with a verdict, FAIL and
    FLAKY marks at a glance, a flaky entry with the 95% interval of its failure rate."""
    variants, subtests, table = variant_table(cells, rev)
    short = [v.rsplit("/", 1)[-1] for v in variants]
    entries = {key: _entry(p) for key, p in table.items()}
    width = max([len(s) for s in subtests] + [8])
    cols = [
        max([len(s), 9] + [len(entries.get((sub, v), "")) for sub in subtests])
        for s, v in zip(short, variants, strict=True)
    ]
    hosts = ", ".join(sorted({c.host for c in cells if c.rev == rev}))
    out = [f"variants at {rev} (passes/runs; a flaky one fails LOW-HIGH%: 95% interval) on {hosts}"]
    header = "  ".join(s.ljust(w) for s, w in zip(short, cols, strict=True))
    out.append(("  " + "subtest".ljust(width) + "  " + header).rstrip())
    for sub in subtests:
        row = [entries.get((sub, v), "-").ljust(w) for v, w in zip(variants, cols, strict=True)]
        out.append(("  " + sub.ljust(width) + "  " + "  ".join(row)).rstrip())
    return out


def _entry(p: Pool) -> str:
    """One variant's pooled subtest: `3/3`, `FAIL 0/3`, `FLAKY 2/3 fails 6-79%`, `ERR`."""
    rate = p.rate
    if not rate.runs:
        return "ERR" if p.errors else "SKIP"
    mark = "FAIL " if rate.fails == rate.runs else ("FLAKY " if rate.flaky else "")
    text = f"{mark}{rate.passes}/{rate.runs}"
    if rate.flaky:
        low, high = rate.interval
        text += f" fails {percent(low, sign=False)}-{percent(high)}"
    return text + (f" +{p.errors} err" if p.errors else "")


def _bisection_line(store: ResultsStore, bisection_id: int) -> str:
    record = store.get_bisection(bisection_id)
    if record is None or record.report is None:
        return f"bisection {bisection_id}: not finished"
    rep = record.report
    culprit = rep.get("culprit")
    if culprit:
        return (
            f"bisection {bisection_id}: {rep['status']}: {culprit['commit'][:12]} "
            f"{culprit['subject']}"
        )
    return f"bisection {bisection_id}: {rep['status']}: {rep['message']}"


def auto_bisect(
    project: Project,
    store: ResultsStore,
    lab: Lab,
    pipeline: Pipeline,
    run_id: int,
    say: Say,
) -> dict[int, int]:
    """Start bisections for this run's new regressions that have a passing baseline revision
    (at most `max_bisections`); returns regression id -> bisection id."""
    from kbisect.bisect.request import BisectRequest
    from kbisect.bisect.session import prepare, run_bisection

    policy = pipeline.auto_bisect
    started: dict[int, int] = {}
    if not policy.enabled:
        return started
    candidates = [
        r
        for r in store.regressions("open")
        if r.opened_run == run_id and r.good_rev and r.good_rev != r.opened_rev
    ]
    for regression in candidates[: policy.max_bisections]:
        tree, variant, profile, host, job, subtest = regression.line
        assert regression.good_rev is not None
        request = BisectRequest(
            tree=tree,
            good=[regression.good_rev],
            bad=regression.opened_rev,
            predicate="job",
            variant=None if variant == "base" else variant,
            job=job,
            test=None if subtest == CELL else subtest,
            host=host,
            profile=profile,
            policy={"min_runs": policy.repeat},
        )
        try:
            request, _ = prepare(project, request)
        except KbisectError as exc:
            say(f"auto-bisect of regression {regression.id} not started: {exc}")
            continue
        record = store.create_bisection(request.to_json())
        store.link_bisection(regression.id, record.id)
        say(f"auto-bisect: regression {regression.id} -> bisection {record.id}")
        with lab.lease(lab.host(host), f"bisect {record.id}"):
            run_bisection(project, store, record.id, request, lab, say)
        started[regression.id] = record.id
    return started
