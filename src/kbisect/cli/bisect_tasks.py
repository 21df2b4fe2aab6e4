"""Tasks for bisection: `bisect`, `bisect.log` and `bisect.replay`."""

from __future__ import annotations

import json as json_module
from pathlib import Path

from invoke.context import Context

from kbisect.bisect.gitbisect import read_bisect_log
from kbisect.bisect.request import BisectRequest
from kbisect.bisect.session import prepare, results_dir, run_bisection, running, shown_status
from kbisect.bisect.stats import Policy
from kbisect.cli.arguments import Convert, number, positive_int, positive_number
from kbisect.cli.common import TaskResult, project, say
from kbisect.cli.common import task as kb_task
from kbisect.config import Project
from kbisect.errors import UserError
from kbisect.lab.lab import Lab
from kbisect.results.store import ResultsStore

_HELP = {
    "good": "Good revision (repeat for several).",
    "bad": "Bad revision.",
    "tree": "Tree name (configs/) or any git repository's path (default: settings.default_tree).",
    "variant": "EXPERIMENT/VARIANT applied at every step (default: the tree as it is).",
    "job": "Predicate: build, deploy and run this job; bad when a subtest FAILs.",
    "test": "With --job: only this subtest decides.",
    "host": "With --job: the host (default: the first embedded host).",
    "profile": "Build profile for --job and --build-only (default: settings.default_profile).",
    "build_only": "Predicate: bad when the kernel does not build.",
    "run": "Predicate: a shell command run in the checked-out tree (git bisect run's contract).",
    "timeout": "Seconds one --run command may take (then it is an infrastructure error).",
    "confidence": "Stop when the likeliest first bad commit has this probability (default 0.99).",
    "repeat": "Runs at each commit tried, at least (default 1; the evidence asks for more).",
    "max_runs": "Predicate runs at most, in all (default 250); then the bisection is aborted.",
    "end_runs": "Runs at each end before bisecting (default 0: as the evidence asks).",
    "budget": "Stop after this many seconds of bisecting (exit 3, the range so far reported).",
    "resume": "Continue bisection ID after a crash or kill, without redoing finished runs.",
}


def _confidence(text: str) -> float:
    value = number(text)
    if not 0.5 < value < 1:
        raise ValueError("expected a probability between 0.5 and 1 (exclusive), e.g. 0.99")
    return value


_CHECKS: dict[str, Convert] = {
    "confidence": _confidence,
    "timeout": positive_number,
    "repeat": positive_int,
    "max_runs": positive_int,
    "end_runs": positive_int,
    "budget": positive_number,
    "resume": positive_int,
}


Limits = tuple[int, int, int, float, float]
"""--repeat, --max-runs, --end-runs, --budget, --confidence."""


def _policy(limits: Limits, predicate: str) -> dict[str, object]:
    repeat, max_runs, end_runs, budget, confidence = limits
    policy: dict[str, object] = {}
    if predicate == "build":  # a build is deterministic (and cached): one run says it all
        policy["deterministic"] = True
    if confidence:
        policy["confidence"] = confidence
    if repeat:
        policy["min_runs"] = repeat
    if max_runs:
        policy["run_budget"] = max(max_runs, repeat)
    if end_runs:
        policy["end_runs"] = end_runs
    if budget:
        policy["budget_seconds"] = budget
    Policy(**policy)  # type: ignore[arg-type]  # validates the names now, not at resume
    return policy


def _predicate(job: str | None, build_only: bool, run: str | None) -> str:
    chosen = [name for name, on in (("job", job), ("build", build_only), ("run", run)) if on]
    if len(chosen) != 1:
        raise UserError("give exactly one predicate: --job J, --build-only or --run CMD")
    return chosen[0]


def _new_request(
    p: Project,
    good: list[str],
    bad: str,
    tree: str | None,
    variant: str | None,
    job: str | None,
    test: str | None,
    host: str | None,
    profile: str | None,
    build_only: bool,
    run: str | None,
    timeout: float,
    limits: Limits,
) -> BisectRequest:
    """The request both `bisect` and `bisect.replay` make from their (shared) options."""
    kind = _predicate(job, build_only, run)
    return BisectRequest(
        tree=p.tree_name(tree),
        good=list(good),
        bad=bad,
        predicate=kind,
        variant=variant,
        command=run,
        command_timeout=timeout,
        job=job,
        test=test,
        host=host,
        profile=profile,
        policy=_policy(limits, kind),
    )


def _execute(
    p: Project, request: BisectRequest, bisection_id: int, store: ResultsStore
) -> TaskResult:
    with Lab(p, say=say) as lab:
        if request.predicate == "job":
            lab.lease(lab.host(request.host), f"bisect {bisection_id}")
        result = run_bisection(p, store, bisection_id, request, lab, say)
    out = results_dir(store, bisection_id)
    say("")
    say((out / "report.txt").read_text().rstrip())
    say("")
    say(f"report: {out / 'report.json'}")
    say(f"junit:  {out / 'junit.xml'}")
    say(f"log:    {out / 'bisect.log'}   (kbisect bisect.log {bisection_id})")
    document = json_module.loads((out / "report.json").read_text())
    document.update(
        report=str(out / "report.json"), junit=str(out / "junit.xml"), log=str(out / "bisect.log")
    )
    message = f"kbisect: bisection {bisection_id}: {result.status.value}"
    return TaskResult(document, result.exit_code, message)


@kb_task(help=_HELP, iterable=["good"], positional=[], checks=_CHECKS)
def bisect(
    c: Context,
    good: list[str],
    bad: str | None = None,
    tree: str | None = None,
    variant: str | None = None,
    job: str | None = None,
    test: str | None = None,
    host: str | None = None,
    profile: str | None = None,
    build_only: bool = False,
    run: str | None = None,
    timeout: float = 3600.0,
    repeat: int = 0,
    max_runs: int = 0,
    end_runs: int = 0,
    budget: float = 0.0,
    confidence: float = 0.0,
    resume: int = 0,
    root: str | None = None,
    json: bool = False,
) -> TaskResult:
    """Find the commit between --good and --bad that made the predicate fail.

    Give one predicate: `--job J` (build, deploy and run a job; `--test NAME` lets one subtest
    decide), `--build-only` (bad when the kernel does not build) or `--run CMD` (a command run
    in the checked-out tree, with git bisect run's exit codes). `--tree` may be the path of any
    git repository; then no configuration is needed.

    One posterior over the first bad commit, learned from every run (flaky results and
    untestable commits included), chooses each next run by the information it gives per second
    it costs, until the likeliest commit has --confidence; then the bad end with it reverted is
    checked. Exit 0 confirmed, 1 found but not confirmed (or only suspects), 2 user error, 3
    infrastructure failure or aborted, 4 the ends did not reproduce.

    `bisect --resume ID` continues a bisection after a crash or `kill -9`: the recorded runs
    are replayed, not redone. See docs/bisection.md.
    """
    p = project(root, required=False)
    with ResultsStore(p.results_dir) as store:
        if resume:
            record = store.get_bisection(resume)
            if record is None:
                raise UserError(f"no bisection {resume} in {store.path}")
            request = BisectRequest.from_json(record.request)
            shown = shown_status(store, record)
            if shown == "running":
                with running(store, resume):  # the one-line error, with the PID
                    pass
            say(f"resuming bisection {resume} ({len(store.trials(resume))} runs recorded)")
            return _execute(p, request, resume, store)
        if not good or bad is None:
            raise UserError("give --good REV (one or more) and --bad REV, or --resume ID")
        request = _new_request(
            p, good, bad, tree, variant, job, test, host, profile, build_only, run, timeout,
            (repeat, max_runs, end_runs, budget, confidence),
        )  # fmt: skip
        request, _ = prepare(p, request)
        record = store.create_bisection(request.to_json())
        say(f"bisection {record.id}: {len(request.good)} good, bad {request.bad[:12]}")
        return _execute(p, request, record.id, store)


@kb_task(
    help={"id": "Bisection id (see the last lines of `kbisect bisect`)."},
    checks={"id": positive_int},
    name="log",
)
def bisect_log(c: Context, id: int, root: str | None = None) -> None:
    """Print a bisection's log in `git bisect log` form (replayable by git and bisect.replay)."""
    p = project(root, required=False)
    with ResultsStore(p.results_dir) as store:
        if store.get_bisection(id) is None:
            raise UserError(f"no bisection {id} in {store.path}")
        log = results_dir(store, id) / "bisect.log"
    if not log.exists():
        raise UserError(f"bisection {id} has no log yet ({log})")
    print(log.read_text(), end="")


_REPLAY_HELP = {k: v for k, v in _HELP.items() if k not in ("good", "bad", "resume")}


@kb_task(
    help={**_REPLAY_HELP, "log_file": "A `git bisect log` file (git's or `kbisect bisect.log`)."},
    checks={k: v for k, v in _CHECKS.items() if k != "resume"},
    name="replay",
)
def bisect_replay(
    c: Context,
    log_file: str,
    tree: str | None = None,
    variant: str | None = None,
    job: str | None = None,
    test: str | None = None,
    host: str | None = None,
    profile: str | None = None,
    build_only: bool = False,
    run: str | None = None,
    timeout: float = 3600.0,
    repeat: int = 0,
    max_runs: int = 0,
    end_runs: int = 0,
    budget: float = 0.0,
    confidence: float = 0.0,
    root: str | None = None,
    json: bool = False,
) -> TaskResult:
    """Continue from a bisect log: its good marks and its last bad mark become the ends of a new
    bisection (confirmed like any ends), so the finished part is not redone.

    The log may be git's own `git bisect log` or kbisect's (`bisect.log`). The predicate and
    its options are those of `bisect`.
    """
    p = project(root, required=False)
    good, bad = read_bisect_log(Path(log_file))
    request = _new_request(
        p, good, bad, tree, variant, job, test, host, profile, build_only, run, timeout,
        (repeat, max_runs, end_runs, budget, confidence),
    )  # fmt: skip
    with ResultsStore(p.results_dir) as store:
        request, _ = prepare(p, request)
        record = store.create_bisection(request.to_json())
        say(f"bisection {record.id} from {log_file}: {len(good)} good, bad {bad[:12]}")
        return _execute(p, request, record.id, store)
