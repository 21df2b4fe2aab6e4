"""Running a pipeline: expand the matrix, build each (revision, variant, profile) once, and keep
every host busy while the next revision compiles.

One builder thread checks out and builds the build units in order (a kernel build takes all the
cores); one worker thread per host takes the units as they are built and runs their cells on its
host, under the host's lease. So a host runs unit k while unit k+1 compiles, and several hosts run
in parallel. A host that breaks turns its remaining cells into ERROR.

The planned matrix is stored with the run; `--resume RUN` runs only the cells the store does not
have yet (a cell is recorded whole, in one transaction, so there are no half or double cells).

Several controllers can work on one run (a shared store; the others join with `--resume RUN`):
a host's cells run only under its lease, taken for one build unit at a time, and the holder
looks again under the lease at which of them the store already has, so each cell runs once
and no host is driven by two. The last controller to finish writes the run's outputs.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from kbisect.build.builder import BuildOutcome
from kbisect.build.store import Artifact
from kbisect.config import Pipeline, Project
from kbisect.deadline import Deadline
from kbisect.errors import ExitCode, InfraError, KbisectError, UserError
from kbisect.lab.lab import Lab
from kbisect.lab.protocol import HostBroken, LabHost
from kbisect.pipeline.cell import CellRunner, CellSpec, Provenance
from kbisect.progress import Say
from kbisect.results.model import CellIdentity, CellRecord, ResultStatus, RunStatus
from kbisect.results.schema import DB_NAME
from kbisect.results.store import ResultsStore
from kbisect.tree import debian, repos
from kbisect.tree.checkout import Checkout

LEASE_WAIT = 600.0  # seconds a worker waits for its host's lease, for one build unit
_RECHECK = 5.0  # while waiting, how often it looks whether another controller ran the cells


@dataclass(frozen=True)
class PlannedCell:
    tree: str
    rev: str
    variant: str | None  # EXPERIMENT/VARIANT, or None for the tree as it is
    profile: str
    host: str
    job: str
    repeat: int

    @property
    def identity(self) -> CellIdentity:
        return CellIdentity(
            self.tree, self.rev, self.variant or "base", self.profile, self.host, self.job,
            self.repeat,
        )  # fmt: skip

    @property
    def unit(self) -> tuple[str, str, str | None, str]:
        """What is built once for all the cells that share it."""
        return (self.tree, self.rev, self.variant, self.profile)


def plan(
    project: Project, pipeline: Pipeline, say: Say = print, *, import_missing: bool = True
) -> list[PlannedCell]:
    """The matrix, revisions resolved now (the newest tags of today), in build order. A Debian
    tree with fewer releases imported than the newest N asked for imports Debian's newest N
    first (so `kbisect nightly` works on a fresh machine); without import_missing (a dry run) the
    plan names those releases' tags without importing them."""
    variants: list[str | None] = []
    for vs in pipeline.experiments:
        names = vs.variants or [v.name for v in project.experiments[vs.experiment].variants]
        variants += [f"{vs.experiment}/{name}" for name in names]
    cells = []
    for rs in pipeline.revisions:
        tree = repos.open_tree(project, rs.tree)
        revs = list(rs.revisions)
        if rs.newest_tags:
            newest = _newest_tags(project, tree, rs.newest_tags, say, import_missing=import_missing)
            revs += [t for t in newest if t not in revs]
        for rev in revs:
            for variant in variants or [None]:
                for profile in pipeline.profiles:
                    for host in pipeline.hosts:
                        for job in pipeline.jobs:
                            repeats = pipeline.repeat * project.jobs[job].repeat
                            for r in range(1, repeats + 1):
                                cells.append(
                                    PlannedCell(rs.tree, rev, variant, profile, host, job, r)
                                )
    return cells


def _newest_tags(
    project: Project, tree: repos.TreeRepo, count: int, say: Say, *, import_missing: bool
) -> list[str]:
    """The tree's newest `count` tags, importing Debian's newest releases first if missing; a
    dry run (not import_missing) names the tags a run would import instead."""
    missing = _newest_not_imported(tree, count)
    if missing and not import_missing:
        tags = [r.tag for r in missing]
        say(f"{tree.name}: {', '.join(tags)} not imported yet (a run imports them first)")
        return tags
    if missing:
        versions = [r.version for r in missing]
        say(f"{tree.name}: importing Debian's newest {count} releases ({', '.join(versions)})")
        repos.import_debian(project, tree, versions, say)
    return repos.newest_tags(tree, count)


def _newest_not_imported(tree: repos.TreeRepo, count: int) -> list[debian.Release]:
    """Debian's newest `count` releases when the tree has fewer imported, else none."""
    if not tree.is_debian:
        return []
    have = debian.imported_tags(tree.path) if (tree.path / "HEAD").exists() else []
    if len(have) >= count:
        return []
    package = tree.config.debian_package
    assert package is not None
    return debian.available_releases(package)[-count:]


@dataclass
class Progress:
    total: int
    done: int = 0
    failed: int = 0
    errors: int = 0
    running: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        left = ""
        if self.done:
            remaining = (self.total - self.done) * elapsed / self.done
            left = f", about {remaining / 60:.1f} min left"
        return (
            f"[{self.done}/{self.total} cells done, {len(self.running)} running, "
            f"{self.failed} failed, {self.errors} errors{left}]"
        )


@dataclass
class Unit:
    key: tuple[str, str, str | None, str]
    cells: list[PlannedCell]
    checkout: Checkout | None = None
    outcome: BuildOutcome | None = None
    error: str | None = None


class NightlyRun:
    """Executes the not-yet-recorded cells of one run."""

    def __init__(
        self,
        project: Project,
        pipeline: Pipeline,
        store: ResultsStore,
        lab: Lab,
        run_id: int,
        cells: list[PlannedCell],
        say: Say,
    ) -> None:
        self.project = project
        self.pipeline = pipeline
        self.store = store
        self.lab = lab
        self.run_id = run_id
        self.say = say
        self.stop = threading.Event()
        done = {c.identity for c in store.cells(run_id)}
        self.todo = [c for c in cells if c.identity not in done]
        self.progress = Progress(total=len(cells), done=len(cells) - len(self.todo))
        units: dict[tuple[str, str, str | None, str], Unit] = {}
        for cell in self.todo:
            units.setdefault(cell.unit, Unit(cell.unit, [])).cells.append(cell)
        self.units = list(units.values())
        hosts = sorted({c.host for c in self.todo})
        self.queues: dict[str, queue.Queue[Unit | None]] = {h: queue.Queue() for h in hosts}
        for name in hosts:
            lab.host(name)  # made here, in one thread
        self.failures: list[str] = []

    def execute(self) -> None:
        if not self.todo:
            self.say("every cell of this run is recorded already")
            return
        self.say(
            f"{len(self.todo)} cells to run in {len(self.units)} builds on "
            f"{len(self.queues)} host(s) {self.progress.line()}"
        )
        threads = [threading.Thread(target=self._builder, name="builder", daemon=True)]
        threads += [
            threading.Thread(target=self._worker, args=(h,), name=f"host-{h}", daemon=True)
            for h in self.queues
        ]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(timeout=0.5)
        except BaseException:
            self.stop.set()
            raise
        if self.failures:
            raise InfraError("; ".join(self.failures))

    # -- threads -----------------------------------------------------------------------------

    def _builder(self) -> None:
        store = ResultsStore(self.store.results_dir, url=self.store.url)
        try:
            runner = CellRunner(self.project, self.lab, store, self.run_id, self.say)
            for unit in self.units:
                if self.stop.is_set():
                    break
                if not self.unrecorded(store, unit.cells):
                    continue  # another controller ran them meanwhile
                spec = self._spec(unit.cells[0])
                try:
                    unit.checkout, unit.outcome = runner.prepare(spec)
                except KbisectError as exc:
                    unit.error = f"checkout or build failed: {exc}"
                for host in {c.host for c in unit.cells}:
                    self.queues[host].put(unit)
        except BaseException as exc:  # never leave the workers waiting
            self.failures.append(f"builder: {exc}")
        finally:
            for q in self.queues.values():
                q.put(None)
            store.close()

    def _worker(self, host_name: str) -> None:
        store = ResultsStore(self.store.results_dir, url=self.store.url)
        try:
            runner = CellRunner(self.project, self.lab, store, self.run_id, self.say)
            host = self.lab.host(host_name)
            waited, first_ready = 0.0, None
            while not self.stop.is_set():
                asked = time.monotonic()
                unit = self.queues[host_name].get()
                if first_ready is None:
                    first_ready = time.monotonic()
                else:
                    waited += time.monotonic() - asked
                if unit is None:
                    break
                self._take_unit(runner, store, unit, host)
            if first_ready is not None:
                span = time.monotonic() - first_ready
                busy = 1 - waited / span if span > 0 else 1.0
                self.say(
                    f"{host_name}: busy {busy:.0%} of the {span:.0f} s after its first build "
                    f"(waited {waited:.0f} s for builds)"
                )
        except BaseException as exc:
            self.failures.append(f"host {host_name}: {exc}")
        finally:
            store.close()

    def unrecorded(self, store: ResultsStore, cells: list[PlannedCell]) -> list[PlannedCell]:
        """The cells that no controller has recorded in this run yet."""
        return [c for c in cells if store.find_cell(self.run_id, c.identity) is None]

    def _take_unit(
        self, runner: CellRunner, store: ResultsStore, unit: Unit, host: LabHost
    ) -> None:
        """Run this host's cells of the unit that are not recorded yet, under the host's lease.
        While another controller holds the host, look now and then whether it ran them."""
        mine = [c for c in unit.cells if c.host == host.name]
        deadline = Deadline(LEASE_WAIT)
        while True:
            if not self.unrecorded(store, mine) or self.stop.is_set():
                return
            try:
                wait = min(_RECHECK, max(deadline.remaining(), 0.0))
                lease = self.lab.lease(host, f"nightly run {self.run_id}", wait=wait)
                break
            except InfraError as exc:
                if deadline.expired:
                    raise InfraError(f"{exc} ({LEASE_WAIT:g} s for this build)") from None
                self.stop.wait(1.0)  # a store that refuses at once is not asked in a busy loop
        with lease:
            todo = self.unrecorded(store, mine)  # under the lease: what is still to do
            if todo and (lease.inherited or self.store.url is not None):
                # what this controller remembers of the host may be another's since: deploy
                host.deployment_file.unlink(missing_ok=True)
            if todo:
                self._run_unit(runner, store, unit, host.name, todo)

    def _run_unit(
        self,
        runner: CellRunner,
        store: ResultsStore,
        unit: Unit,
        host_name: str,
        mine: list[PlannedCell],
    ) -> None:
        by_job: dict[str, list[PlannedCell]] = {}
        for cell in mine:
            by_job.setdefault(cell.job, []).append(cell)
        for job, cells in by_job.items():
            if self.stop.is_set():
                return
            spec = self._spec(cells[0])
            label = f"{spec.rev} {spec.variant or 'base'} {host_name} {job}"
            with self.progress.lock:
                self.progress.running.add(label)
            try:
                records = self._run_cells(runner, unit, spec, [c.repeat for c in cells])
            finally:
                with self.progress.lock:
                    self.progress.running.discard(label)
            with self.progress.lock:
                for r in records:
                    self.progress.done += 1
                    self.progress.failed += r.status is ResultStatus.FAIL
                    self.progress.errors += r.status is ResultStatus.ERROR
                self.say(f"{label}: {', '.join(r.status.value for r in records)} "
                         f"{self.progress.line()}")  # fmt: skip

    def _run_cells(
        self, runner: CellRunner, unit: Unit, spec: CellSpec, repeats: list[int]
    ) -> list[CellRecord]:
        host = self.lab.host(spec.host)
        if unit.error is not None or unit.checkout is None:
            reason = unit.error or "not built"
            return runner.record_each(
                spec, repeats, Provenance(spec.variant or "base"), ResultStatus.ERROR, reason
            )
        if host.broken:
            prov = Provenance(unit.checkout.variant, unit.checkout.commit)
            reason = f"host {host.name} is broken for this run: {host.broken}"
            return runner.record_each(spec, repeats, prov, ResultStatus.ERROR, reason)
        try:
            return runner.run_prepared(
                spec, repeats, unit.checkout, unit.outcome, lease=False,
                next_build=lambda: self._next_build(host.name),
            )  # fmt: skip
        except HostBroken as exc:
            prov = Provenance(unit.checkout.variant, unit.checkout.commit)
            return runner.record_each(spec, repeats, prov, ResultStatus.ERROR, str(exc))

    def _next_build(self, host_name: str) -> Artifact | None:
        """The build of the next unit already waiting in this host's queue, if any."""
        waiting = self.queues[host_name]
        with waiting.mutex:  # a peek: the unit stays queued for the worker
            upcoming: Unit | None = next((u for u in waiting.queue if u is not None), None)
        if upcoming is None or upcoming.outcome is None:
            return None
        return upcoming.outcome.artifact

    def _spec(self, cell: PlannedCell) -> CellSpec:
        return CellSpec(
            tree=cell.tree,
            rev=cell.rev,
            variant=cell.variant,
            profile=self.project.profiles[cell.profile],
            host=cell.host,
            job=self.project.jobs[cell.job],
        )


def cells_to_json(cells: list[PlannedCell]) -> list[dict[str, Any]]:
    return [asdict(c) for c in cells]


def cells_from_json(data: list[dict[str, Any]]) -> list[PlannedCell]:
    return [PlannedCell(**d) for d in data]


def interrupted(lab: Lab) -> None:
    """Ctrl-C or a kill: end builds and QEMU by PID; the run stays resumable."""
    from kbisect.processes import end_all

    end_all()
    with contextlib.suppress(Exception):
        lab.close()


# -- the whole nightly ----------------------------------------------------------------------------


@dataclass
class NightlyResult:
    """What one nightly did: its run, how it exits, its summary and its merged JUnit file."""

    run_id: int
    exit_code: ExitCode
    summary: str
    junit: str


def run_nightly(
    project: Project, pipeline_name: str, resume: int | None, say: Say
) -> NightlyResult:
    """Plan (or resume), execute, classify, auto-bisect, and write the outputs of one nightly."""
    from kbisect.pipeline import outputs
    from kbisect.pipeline.regressions import classify_run

    pipeline = project.pipelines[pipeline_name]
    no_file = project.store_url is None and not (project.results_dir / DB_NAME).is_file()
    if resume and no_file:  # refused before writing
        raise UserError(
            f"no nightly run {resume} in {project.results_dir} (no results store there)"
        )
    store = ResultsStore(project.results_dir, url=project.store_url)
    try:
        if resume:
            run = store.get_run(resume)
            if run is None or run.kind != "nightly":
                raise UserError(f"no nightly run {resume} in {store.path}")
            cells = cells_from_json(run.meta["cells"])
            say(f"resuming nightly run {run.id} ({run.pipeline})")
        else:
            cells = plan(project, pipeline, say)
            run = store.start_run(
                "nightly", pipeline=pipeline_name, meta={"cells": cells_to_json(cells)}
            )
            say(f"nightly run {run.id}: pipeline {pipeline_name}, {len(cells)} cells")
        with Lab(project, say=say) as lab:
            executor = NightlyRun(project, pipeline, store, lab, run.id, cells, say)
            try:
                executor.execute()
            except KeyboardInterrupt:
                executor.stop.set()
                interrupted(lab)
                say(f"interrupted: resume with `kbisect nightly --resume {run.id}`")
                raise
            left = len(executor.unrecorded(store, cells))
            if left or not store.claim_finish(run.id):
                return _left_to_others(store, run.id, left)
            changes = classify_run(store, run.id, use_history=pipeline.baseline == "previous")
            bisections = outputs.auto_bisect(project, store, lab, pipeline, run.id, say)
        junit = outputs.write_junit(store, run.id)
        summary = outputs.summary(store, run.id, changes, bisections)
        (store.results_dir / "runs" / str(run.id) / "summary.txt").write_text(summary)
        store.finish_run(run.id, RunStatus.FINISHED)
        new_regressions = [r for r in store.regressions() if r.opened_run == run.id]
        code = ExitCode.FAILED if new_regressions else _cells_code(store, run.id)
        return NightlyResult(run.id, code, summary, str(junit))
    finally:
        store.close()


def _cells_code(store: ResultsStore, run_id: int) -> ExitCode:
    statuses = {c.status for c in store.cells(run_id)}
    return ExitCode.INFRA if ResultStatus.ERROR in statuses else ExitCode.OK


def _left_to_others(store: ResultsStore, run_id: int, left: int) -> NightlyResult:
    """This controller is done with its part of a shared run: the controller that records the
    last cell (or that won the race to finish) classifies it and writes its outputs."""
    if left:
        summary = (
            f"nightly run {run_id}: {left} cells are with other controllers; the last one to "
            "finish writes the run's outputs"
        )
    elif (run := store.get_run(run_id)) is not None and run.status is not RunStatus.RUNNING:
        summary = f"nightly run {run_id} is {run.status.value} already: its outputs are written"
    else:
        summary = f"nightly run {run_id}: another controller is writing the run's outputs"
    return NightlyResult(run_id, _cells_code(store, run_id), summary, "")
