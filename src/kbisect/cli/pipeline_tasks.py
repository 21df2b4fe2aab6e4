"""Tasks that run pipelines."""

from __future__ import annotations

from invoke.context import Context
from invoke.exceptions import Exit

from kbisect.cli.arguments import positive_int
from kbisect.cli.common import project, say, task
from kbisect.errors import ExitCode, UserError
from kbisect.pipeline.nightly import plan, run_nightly
from kbisect.pipeline.plan import axes


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
) -> None:
    """Run a pipeline: revisions x variants x profiles x hosts x jobs x repeats.

    Builds are shared between cells, hosts run while the next revision compiles, results are
    classified against the previous nightly (REGRESSION, FIXED, ...), new regressions are
    bisected (auto_bisect), and JUnit and a summary are written. Exit 0 no new regressions,
    1 new regressions, 3 infrastructure failure.
    """
    p = project(root)
    if pipeline not in p.pipelines:
        known = ", ".join(sorted(p.pipelines)) or "none"
        raise UserError(f"unknown pipeline {pipeline!r} (known: {known})")
    if dry_run:
        say(f"pipeline {pipeline}: {p.pipelines[pipeline].description}")
        for axis in axes(p, p.pipelines[pipeline]):
            say(f"  {axis.name:10} {', '.join(axis.values)}")
        cells = plan(p, p.pipelines[pipeline], say, import_missing=False)
        say(f"{len(cells)} cells:")
        for cell in cells:
            say(f"  {cell.tree} {cell.rev} {cell.variant or 'base'} {cell.profile} "
                f"{cell.host} {cell.job} r{cell.repeat}")  # fmt: skip
        return
    outcome = run_nightly(p, pipeline, resume or None, say)
    say("")
    say(outcome.summary.rstrip())
    say(f"junit: {outcome.junit}")
    if outcome.exit_code:
        what = {ExitCode.FAILED: "new regressions", ExitCode.INFRA: "infrastructure errors"}[
            outcome.exit_code
        ]
        raise Exit(f"kbisect: nightly run {outcome.run_id}: {what}", outcome.exit_code)
