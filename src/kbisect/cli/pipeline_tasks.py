"""Tasks that run pipelines."""

from __future__ import annotations

from invoke.context import Context

from kbisect.cli.common import project, say, task
from kbisect.errors import UserError
from kbisect.pipeline.plan import axes


@task(help={"pipeline": "Pipeline name: a file under pipelines/ without .yaml (default: nightly)."})
def nightly(c: Context, pipeline: str = "nightly") -> None:
    """Run a pipeline: the matrix of revisions x variants x profiles x hosts x jobs."""
    p = project()
    if pipeline not in p.pipelines:
        known = ", ".join(sorted(p.pipelines)) or "none"
        raise UserError(f"unknown pipeline {pipeline!r} (known: {known})")
    say(f"pipeline {pipeline}: {p.pipelines[pipeline].description}")
    for axis in axes(p, p.pipelines[pipeline]):
        say(f"  {axis.name:10} {', '.join(axis.values)}")
    say(
        "kbisect: configuration checked and matrix planned; the checkout, build, lab and job "
        "stages are not in this version yet, so no cell was run"
    )
