"""Tasks that run jobs: `stress` on what a host runs now, `run` for one cell end to end."""

from __future__ import annotations

from typing import Any

from invoke.context import Context

from kbisect.build.builder import store_for
from kbisect.cli.arguments import positive_int
from kbisect.cli.common import TaskResult, project, say
from kbisect.cli.common import task as kb_task
from kbisect.config import Job, Project
from kbisect.errors import ExitCode, UserError
from kbisect.lab.lab import Lab
from kbisect.pipeline.cell import CellRunner, CellSpec
from kbisect.results.junit import write_junit
from kbisect.results.model import CellRecord, ResultStatus, RunStatus
from kbisect.results.store import ResultsStore


def _job(p: Project, name: str) -> Job:
    if name not in p.jobs:
        known = ", ".join(sorted(p.jobs)) or "none"
        raise UserError(f"unknown job {name!r} (configured: {known})")
    return p.jobs[name]


def _finish(store: ResultsStore, run_id: int, cells: list[CellRecord]) -> TaskResult:
    """Record the run's end, write its JUnit, print the summary; exit by the worst status."""
    junit = store.results_dir / "runs" / str(run_id) / "junit.xml"
    write_junit(cells, junit, results_dir=store.results_dir)
    store.finish_run(run_id)
    say("")
    say(summary_table(cells))
    say("")
    say(f"run {run_id}: {store.path}")
    say(f"junit: {junit}")
    document = {
        "run": run_id,
        "store": str(store.path),
        "junit": str(junit),
        "cells": [cell_document(c) for c in cells],
    }
    statuses = {c.status for c in cells}
    if ResultStatus.ERROR in statuses:
        message = "kbisect: infrastructure errors (ERROR): see the reasons above"
        return TaskResult(document, ExitCode.INFRA, message)
    if ResultStatus.FAIL in statuses:
        return TaskResult(document, ExitCode.FAILED, "kbisect: the kernel failed (FAIL)")
    return TaskResult(document)


def cell_document(cell: CellRecord) -> dict[str, Any]:
    """A cell as `--json` shows it: what ran, its verdict, and its subtests'."""
    return {
        "tree": cell.tree,
        "rev": cell.rev,
        "commit": cell.commit,
        "variant": cell.variant or "base",
        "profile": cell.profile,
        "host": cell.host,
        "job": cell.job,
        "repeat": cell.repeat,
        "status": cell.status.value,
        "reason": cell.reason,
        "build": cell.build_key,
        "subtests": [
            {"name": s.name, "status": s.status.value, "errno": s.errno, "detail": s.detail}
            for s in cell.subtests
        ],
    }


def summary_table(cells: list[CellRecord]) -> str:
    """Cells, then their subtests side by side (one column per repeat)."""
    lines = []
    for c in cells:
        lines.append(
            f"{c.rev} {c.variant or 'base'} on {c.host}, {c.job} r{c.repeat}: "
            f"{c.status.value}  {c.reason}"
        )
    names: list[str] = []
    for c in cells:
        names.extend(s.name for s in c.subtests if s.name not in names)
    if names:
        width = max(len(n) for n in names)
        header = "  ".join(f"r{c.repeat}".ljust(5) for c in cells)
        lines.append("")
        lines.append(f"{'subtest'.ljust(width)}  {header}  detail (last repeat)")
        for name in names:
            row = []
            detail = ""
            for c in cells:
                sub = next((s for s in c.subtests if s.name == name), None)
                row.append((sub.status.value if sub else "-").ljust(5))
                if sub is not None:
                    detail = f"errno={sub.errno} {sub.detail}" if sub.errno else sub.detail
            lines.append(f"{name.ljust(width)}  {'  '.join(row)}  {detail[:90]}")
    return "\n".join(lines)


@kb_task(
    help={
        "host": "Host that runs the job (default: the first embedded host).",
        "job": "Job name (configs/).",
        "repeat": "Runs (default: the job's repeat).",
    },
    checks={"repeat": positive_int},
)
def stress(
    c: Context,
    job: str,
    host: str | None = None,
    repeat: int = 0,
    root: str | None = None,
    json: bool = False,
) -> TaskResult:
    """Run a job on what a host runs now (after `deploy` or `lab.up`); record it as a run.

    The run is recorded in the results store like any other. Prints the subtests and the
    JUnit path. Exit 0 all passed or skipped, 1 the kernel failed (FAIL), 3 an infrastructure
    error (ERROR).
    """
    p = project(root)
    chosen_job = _job(p, job)
    with Lab(p, keep_up=True, say=say) as lab, ResultsStore(p.results_dir) as store:
        target = lab.host(host)
        deployed = target.deployment()
        if deployed is None:
            raise UserError(
                f"nothing is deployed on {target.name}: `kbisect deploy` or `kbisect lab.up` first"
            )
        target.check_alive()
        artifact = store_for(p).get(deployed.build_key)
        if artifact is None:
            raise UserError(f"build {deployed.build_key} is no longer in the artifact store")
        meta = artifact.meta
        spec = CellSpec(
            tree=str(meta["tree"]),
            rev=str(meta["revision"]),
            variant=str(meta["variant"]) or None,
            profile=p.profiles[str(meta["profile"])],
            host=target.name,
            job=chosen_job,
        )
        run = store.start_run("stress", meta={"host": target.name, "job": job})
        runner = CellRunner(p, lab, store, run.id, say)
        prov = runner.provenance_of(artifact)
        cells = []
        with lab.lease(target, f"stress {job}"):
            for r in range(1, (repeat or chosen_job.repeat) + 1):
                cells.append(runner.run_repeat(spec, r, target, prov, deployed))
        return _finish(store, run.id, cells)


@kb_task(
    help={
        "tree": "Tree name (configs/) or path of any git repository.",
        "rev": "Revision: tag, branch, commit id or any git revision expression.",
        "variant": "EXPERIMENT/VARIANT or VARIANT; default: the tree as it is.",
        "job": "Job name (configs/).",
        "host": "Host (default: the first embedded host).",
        "profile": "Build profile (default: settings.default_profile, else the only one).",
        "repeat": "Runs (default: the job's repeat).",
        "keep_up": "Leave the embedded host running afterwards (for `stress` or ssh).",
    },
    checks={"repeat": positive_int},
)
def run(
    c: Context,
    tree: str,
    rev: str,
    job: str,
    variant: str | None = None,
    host: str | None = None,
    profile: str | None = None,
    repeat: int = 0,
    keep_up: bool = False,
    root: str | None = None,
    json: bool = False,
) -> TaskResult:
    """One cell end to end: check out, build, deploy, run the job, collect, record.

    Checks out, builds (or reuses the build), deploys, runs the job, collects its output,
    dmesg and the console, judges and records. Prints a summary table (cells and subtests) and
    the JUnit path. Exit 0 all passed or skipped, 1 the kernel failed (a job FAIL or a build
    failure), 3 an infrastructure error; a variant that does not apply is a SKIP. The embedded
    host is shut down afterwards unless `--keep-up`.
    """
    p = project(root)
    chosen_job = _job(p, job)
    with Lab(p, keep_up=keep_up, say=say) as lab, ResultsStore(p.results_dir) as store:
        target = lab.host(host)
        spec = CellSpec(tree, rev, variant, p.profile(profile), target.name, chosen_job)
        run_record = store.start_run(
            "run", meta={"tree": tree, "rev": rev, "variant": variant or "", "job": job}
        )
        try:
            cells = CellRunner(p, lab, store, run_record.id, say).run(spec, repeat or None)
        except BaseException:
            store.finish_run(run_record.id, RunStatus.ABORTED)
            raise
        return _finish(store, run_record.id, cells)
