"""Tasks that run pipelines."""

from __future__ import annotations

from typing import Any

from invoke.context import Context

from kbisect.cli.arguments import positive_int
from kbisect.cli.common import TaskResult, project, say, task
from kbisect.cli.run_tasks import cell_document
from kbisect.config import Project
from kbisect.errors import ExitCode, UserError
from kbisect.pipeline.nightly import NightlyResult, cells_to_json, plan, run_nightly
from kbisect.pipeline.plan import axes
from kbisect.results.store import ResultsStore

REGRESSION_LINE = ("tree", "variant", "profile", "host", "job", "subtest")


@task(
    help={
        "pipeline": "Pipeline name: a file under pipelines/ without .yaml (default: nightly).",
        "resume": "Finish run RUN after a crash or kill, without redoing finished cells.",
        "dry_run": "Print the matrix and the cells, run nothing.",
    },
    checks={"resume": positive_int},
)
def nightly(
    c: Context,
    pipeline: str = "nightly",
    resume: int = 0,
    dry_run: bool = False,
    root: str | None = None,
    json: bool = False,
) -> TaskResult:
    """Run a pipeline: revisions x variants x profiles x hosts x jobs x repeats.

    Each (revision, variant, profile) is built once, and its cells run on the hosts while the
    next build compiles. Results are classified against the previous nightly (REGRESSION,
    FIXED, ...), new regressions are bisected (auto_bisect), and JUnit (one file per cell and
    one merged) and summary.txt are written under results/runs/RUN/. Exit 0 no new
    regressions, 1 new regressions, 3 infrastructure failure. `--resume RUN` finishes a run
    after a crash or kill; `--dry-run` prints the cells. See docs/nightly.md.
    """
    p = project(root)
    if pipeline not in p.pipelines:
        known = ", ".join(sorted(p.pipelines)) or "none"
        raise UserError(f"unknown pipeline {pipeline!r} (known: {known})")
    if dry_run:
        return _dry_run(p, pipeline)
    nightly_run = run_nightly(p, pipeline, resume or None, say)
    say("")
    say(nightly_run.summary.rstrip())
    if nightly_run.junit:  # none from a controller that left the outputs to another
        say(f"junit: {nightly_run.junit}")
    what = {ExitCode.FAILED: "new regressions", ExitCode.INFRA: "infrastructure errors"}
    message = f"kbisect: nightly run {nightly_run.run_id}: {what.get(nightly_run.exit_code, '')}"
    return TaskResult(_document(p, pipeline, nightly_run), nightly_run.exit_code, message)


def _dry_run(p: Project, name: str) -> TaskResult:
    chosen = p.pipelines[name]
    say(f"pipeline {name}: {chosen.description}")
    dimensions = axes(p, chosen)
    for axis in dimensions:
        say(f"  {axis.name:10} {', '.join(axis.values)}")
    cells = plan(p, chosen, say, import_missing=False)
    say(f"{len(cells)} cells:")
    for cell in cells:
        say(f"  {cell.tree} {cell.rev} {cell.variant or 'base'} {cell.profile} "
            f"{cell.host} {cell.job} r{cell.repeat}")  # fmt: skip
    document = {
        "pipeline": name,
        "description": chosen.description,
        "axes": {axis.name: list(axis.values) for axis in dimensions},
        "cells": cells_to_json(cells),
    }
    return TaskResult(document)


def _document(p: Project, pipeline: str, nightly_run: NightlyResult) -> dict[str, Any]:
    """What the summary says, for scripts: the cells and the regressions this run opened."""
    with ResultsStore(p.results_dir) as store:
        cells = store.cells(nightly_run.run_id)
        opened = [r for r in store.regressions() if r.opened_run == nightly_run.run_id]
        out = store.results_dir / "runs" / str(nightly_run.run_id)
    return {
        "run": nightly_run.run_id,
        "pipeline": pipeline,
        "summary": str(out / "summary.txt"),
        "junit": nightly_run.junit,
        "cells": [cell_document(c) for c in cells],
        "new_regressions": [
            {
                "id": r.id,
                "line": dict(zip(REGRESSION_LINE, r.line, strict=True)),
                "good_rev": r.good_rev,
                "bad_rev": r.opened_rev,
                "bisection": r.bisection_id,
            }
            for r in opened
        ],
    }
