"""A bisection as kbisect runs it: from its request (kbisect.bisect.request), the journal in the
results store, the bisect log file, the predicate, and the report files.

Files: `results/bisect/ID/bisect.log` (git's, rewritten after every mark), `report.json`,
`report.txt`, `junit.xml`; scratch git state and revert patches under `cache/bisect/ID/`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kbisect.bisect import report
from kbisect.bisect.engine import Bisector, BisectResult
from kbisect.bisect.gitbisect import load_history
from kbisect.bisect.predicates import (
    BuildPredicate,
    JobPredicate,
    Predicate,
    RunPredicate,
    TrialOutcome,
)
from kbisect.bisect.request import BisectRequest
from kbisect.bisect.stats import DEFAULT_BOOT_SECONDS, BuildFacts, Policy, TrialCosts
from kbisect.build.store import ArtifactStore
from kbisect.config import Project
from kbisect.errors import KbisectError, UserError
from kbisect.lab.lab import Lab
from kbisect.lab.protocol import Deployment, KernelDidNotBoot
from kbisect.progress import Say
from kbisect.results.model import BisectionRecord, ResultStatus, TrialRecord
from kbisect.results.store import ResultsStore
from kbisect.tree import repos
from kbisect.tree.git import Git
from kbisect.tree.repos import TreeRepo
from kbisect.tree.variants import find_variant


class StoreJournal:
    """The bisection's runs in the results store, and its bisect log as a file."""

    def __init__(self, store: ResultsStore, bisection_id: int, log_file: Path) -> None:
        self.store = store
        self.id = bisection_id
        self.log_file = log_file

    def recorded(self) -> list[TrialRecord]:
        return self.store.trials(self.id)

    def add(self, trial: TrialRecord) -> None:
        self.store.add_trial(self.id, trial)

    def bisect_log(self, text: str) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.log_file.with_name(self.log_file.name + ".part")
        tmp.write_text(text)
        tmp.replace(self.log_file)


def results_dir(store: ResultsStore, bisection_id: int) -> Path:
    return store.results_dir / "bisect" / str(bisection_id)


@contextlib.contextmanager
def running(store: ResultsStore, bisection_id: int) -> Iterator[None]:
    """Held while this process runs the bisection: a lock on `results/bisect/ID/lock`, which
    names the PID. The kernel lets go of it when the process dies, however it dies, so a lock
    is never stale; a second process gets a one-line user error instead of a race."""
    path = results_dir(store, bisection_id) / "lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            pid = lock.read().strip() or "?"
            raise UserError(f"bisection {bisection_id} is running (pid {pid})") from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def shown_status(store: ResultsStore, record: BisectionRecord) -> str:
    """The status to show: "running" only while a process holds the bisection's lock; one
    whose process died is interrupted."""
    if record.status != "running":
        return record.status
    path = results_dir(store, record.id) / "lock"
    try:
        with path.open("a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return "running"
    except OSError:
        pass
    return f"interrupted — resume with `kbisect bisect --resume {record.id}`"


def state_dir(project: Project, bisection_id: int) -> Path:
    return project.cache_dir / "bisect" / str(bisection_id)


def prepare(project: Project, request: BisectRequest) -> tuple[BisectRequest, TreeRepo]:
    """Resolve the ends to commit ids (a user error when they do not exist)."""
    tree = repos.open_tree(project, request.tree)
    repos.ensure_mirror(tree)
    request.good_given = list(request.good)
    request.bad_given = request.bad
    goods = list(dict.fromkeys(repos.resolve(tree, rev) for rev in request.good))
    request.bad = repos.resolve(tree, request.bad)
    if request.bad in goods:
        raise UserError("the good and the bad end are the same commit")
    with Git(tree.path) as g:
        # a good commit below another good one adds nothing (git would not test it either)
        request.good = [
            c
            for c in goods
            if not any(o != c and g.try_run("merge-base", "--is-ancestor", c, o).ok for o in goods)
        ]
        for good in request.good:
            if not g.try_run("merge-base", "--is-ancestor", good, request.bad).ok:
                raise UserError(
                    f"the good end {good[:12]} is not an ancestor of the bad end "
                    f"{request.bad[:12]}: is it the other way round?"
                )
    return request, tree


def run_bisection(
    project: Project,
    store: ResultsStore,
    bisection_id: int,
    request: BisectRequest,
    lab: Lab | None,
    say: Say,
) -> BisectResult:
    """Run (or resume) bisection `bisection_id`, write its report files, record its status."""
    with running(store, bisection_id):
        tree = repos.open_tree(project, request.tree)
        repos.ensure_mirror(tree)
        try:
            policy = Policy.stored(request.policy)
        except (TypeError, ValueError) as exc:
            raise UserError(f"bisection {bisection_id}: stored policy: {exc}") from None
        scratch = state_dir(project, bisection_id)
        out = results_dir(store, bisection_id)
        journal = StoreJournal(store, bisection_id, out / "bisect.log")
        predicate = make_predicate(project, tree, request, lab, say, out / "runs")
        costs = trial_costs(project, tree, request, lab)
        bisector = Bisector(
            history=load_history(tree.path, request.good, request.bad),
            predicate=predicate,
            policy=policy,
            journal=journal,
            make_revert=lambda c: revert_patch(tree, c, scratch),
            cost=costs,
            learn_cost=costs.ran,
            say=say,
        )
        say(f"bisection {bisection_id}: {predicate.describe()}")
        result = bisector.run()
        data = report.to_json(result, request, tree, bisection_id)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(data, indent=2) + "\n")
        (out / "report.txt").write_text(report.to_text(data))
        report.write_junit(data, out / "junit.xml")
        store.finish_bisection(bisection_id, result.status.value, data)
        return result


def trial_costs(
    project: Project, tree: TreeRepo, request: BisectRequest, lab: Lab | None
) -> TrialCosts:
    """What a run costs, from what kbisect knows before any has been timed: a command alone;
    a build, cheap when the artifact store has it and else the store's typical compile time
    for the profile; a boot at the host's last recorded boot time. Every run then teaches the
    real figures (kbisect.bisect.stats.TrialCosts)."""
    if request.predicate == "run":
        return TrialCosts(run_seconds=60)
    from kbisect.build.builder import store_for
    from kbisect.build.key import profile_identity

    profile = project.profile(request.profile)
    facts = BuildFacts.of(
        _metas(store_for(project)),
        tree=tree.name,
        variant=find_variant(project, request.variant).qualified,
        profile=profile.name,
        identity=profile_identity(profile, project.configs_dir),
    )
    if request.predicate == "build":
        return facts.costs(run_seconds=5, boot_seconds=0)
    deployment = lab.host(request.host).deployment() if lab is not None else None
    return facts.costs(run_seconds=60, boot_seconds=boot_seconds(deployment))


def _metas(store: ArtifactStore) -> Iterator[dict[str, Any]]:
    """The artifacts' meta.json (one a pruning removed meanwhile, or unreadable, is left out:
    it only makes a build look less cheap)."""
    for artifact in store.artifacts():
        try:
            yield artifact.meta
        except (OSError, ValueError):
            continue


def boot_seconds(deployment: Deployment | None) -> float:
    """The host's boot time as its last verified boot recorded it, else the default."""
    if deployment is None or deployment.boot_seconds <= 0:
        return DEFAULT_BOOT_SECONDS
    return deployment.boot_seconds


def revert_patch(tree: TreeRepo, commit: str, scratch: Path) -> Path | None:
    """The culprit's change in reverse, as a patch for the bad end (None if it is empty)."""
    with Git(tree.path) as g:
        diff = g.run("diff", "--binary", "--full-index", commit, f"{commit}^")
    if not diff.strip():
        return None
    path = scratch / f"revert-{commit[:12]}.patch"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(diff)
    return path


def make_predicate(
    project: Project,
    tree: TreeRepo,
    request: BisectRequest,
    lab: Lab | None,
    say: Say,
    logs_dir: Path,
) -> Predicate:
    variant = find_variant(project, request.variant)
    if request.predicate == "run":
        assert request.command is not None
        return RunPredicate(project, tree, variant, request.command, request.command_timeout, say)
    profile = project.profile(request.profile)
    if request.predicate == "build":
        return BuildPredicate(project, tree, variant, profile, say)
    if request.predicate != "job" or request.job is None or lab is None:
        raise UserError(f"unknown predicate {request.predicate!r}")
    if request.job not in project.jobs:
        raise UserError(f"unknown job {request.job!r} (configured: {', '.join(project.jobs)})")
    job = project.jobs[request.job]
    # only the named subtest decides, so only it runs (where the program can): seconds instead
    # of a minute per step
    only = (request.test,) if request.test else ()
    builder = BuildPredicate(project, tree, variant, profile, say, failure_is=TrialOutcome.SKIP)
    host = lab.host(request.host)
    from kbisect.jobs.program import program_of
    from kbisect.jobs.runner import run_job

    binary = program_of(job).binary(project.cache_dir)
    counter = [0]

    def run_cell(artifact: object) -> tuple[ResultStatus, dict[str, ResultStatus], str]:
        from kbisect.build.store import Artifact

        assert isinstance(artifact, Artifact)
        current = host.deployment()
        alive = True
        try:
            host.check_alive()
        except KbisectError:
            alive = False
        if current is None or current.build_key != artifact.key or not alive:
            try:
                host.deploy(artifact)
            except KernelDidNotBoot as exc:  # bad, as a kernel that fails before its test
                reason = str(exc).splitlines()[0]
                return ResultStatus.FAIL, {"boot": ResultStatus.FAIL}, reason
        counter[0] += 1
        out = logs_dir / str(counter[0])
        result = run_job(host, job, counter[0], binary, out, say, only=only)
        v = result.verdict
        return v.status, {s.name: s.status for s in v.subtests}, v.reason

    return JobPredicate(builder, run_cell, job, request.test)
