"""Bisection on synthetic git repositories with known culprits: the real `kbisect bisect` command
(git bisect in kbisect's own state, worktree slots, the results store), and the engine directly
for seeded flaky predicates."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.test_bisect_engine import Journal as MemoryJournal
from tests.test_processes import gone

from conftest import MakeProject
from fake_kernel import commit_file, make_buildable_repo
from kbisect.bisect import predicates
from kbisect.bisect.engine import Bisector, Status
from kbisect.bisect.gitbisect import Mark, load_history
from kbisect.bisect.predicates import TrialOutcome, TrialResult
from kbisect.bisect.stats import Policy

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Ada Tester",
    "GIT_AUTHOR_EMAIL": "ada@example.org",
    "GIT_COMMITTER_NAME": "Ada Tester",
    "GIT_COMMITTER_EMAIL": "ada@example.org",
    "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
}


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True, timeout=60,
        env={**os.environ, **GIT_ENV},
    )  # fmt: skip
    return done.stdout.strip()


def linear_repo(path: Path, count: int, bug_at: int | None = None) -> list[str]:
    """A repository whose commit i (1-based) writes `i` into `level`, except commit `bug_at`,
    which only adds `bug.c`; returns the commit ids."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    commits = []
    for i in range(1, count + 1):
        if i == bug_at:
            (path / "bug.c").write_text("int broken = 1;\n")
        else:
            (path / "level").write_text(f"{i}\n")
            (path / f"file{i % 7}.txt").write_text(f"change {i}\n")
        git(path, "add", "-A")
        git(path, "commit", "-q", "-m", f"change number {i}")
        commits.append(git(path, "rev-parse", "HEAD"))
    return commits


def kbisect(tmp: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KBISECT_CACHE": str(tmp / "cache"),
        "KBISECT_RESULTS": str(tmp / "results"),
    }
    env.pop("KBISECT_ROOT", None)
    return subprocess.run(
        [sys.executable, "-m", "kbisect", *args], cwd=tmp, capture_output=True, text=True,
        env=env, timeout=timeout, check=False,
    )  # fmt: skip


def report(tmp: Path, bisection: int = 1) -> dict[str, object]:
    data: dict[str, object] = json.loads(
        (tmp / "results" / "bisect" / str(bisection) / "report.json").read_text()
    )
    return data


# -- the command ---------------------------------------------------------------------------------


@pytest.mark.slow  # a whole real bisection
def test_run_predicate_finds_and_confirms_the_culprit(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    commits = linear_repo(repo, 40, bug_at=23)
    culprit = commits[22]
    done = kbisect(
        tmp_path, "bisect", "--tree", str(repo), "--good", commits[0], "--bad", "main",
        "--run", "! test -e bug.c",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    data = report(tmp_path)
    assert data["status"] == "confirmed"
    assert data["culprit"]["commit"] == culprit  # type: ignore[index]
    assert data["culprit"]["subject"] == "change number 23"  # type: ignore[index]
    assert data["culprit"]["files"] == ["bug.c"]  # type: ignore[index]
    validations = {v["name"]: v["ok"] for v in data["validations"]}  # type: ignore[attr-defined]
    assert validations == {"culprit": True, "parent": True, "revert": True}
    steps = data["steps"]
    assert 5 <= len(steps) <= 7  # type: ignore[arg-type]
    assert f"culprit  {culprit}" in done.stdout
    # the log is git's own and replays in a plain clone to the same answer
    log = tmp_path / "results/bisect/1/bisect.log"
    shown = kbisect(tmp_path, "bisect.log", "--id", "1")
    assert shown.returncode == 0 and shown.stdout == log.read_text()
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    git(clone, "bisect", "replay", str(log))
    assert f"{culprit} is the first bad commit" in git(clone, "bisect", "log") or (
        git(clone, "rev-parse", "refs/bisect/bad") == culprit
    )
    # JUnit: the result testcase passes for a confirmed culprit
    junit = (tmp_path / "results/bisect/1/junit.xml").read_text()
    assert '<testcase name="result"' in junit and "<failure" not in junit


def test_command_past_its_timeout_is_ended_with_its_children(tmp_path: Path) -> None:
    record = tmp_path / "pid"
    command = f'sleep 300 & echo "$!" > {record}; wait'
    assert predicates._run_command(command, tmp_path, timeout=1) is None  # timed out
    grandchild = int(record.read_text())
    assert gone(grandchild)
    assert predicates._run_command("exit 3", tmp_path, timeout=30) == 3


@pytest.mark.slow  # a whole real bisection
def test_skipped_commits_next_to_the_culprit_leave_suspects(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    commits = linear_repo(repo, 32)
    script = tmp_path / "check.sh"
    script.write_text(
        "#!/bin/sh\nl=$(cat level)\n"
        'if [ "$l" -ge 14 ] && [ "$l" -le 16 ]; then exit 125; fi\n'  # unbuildable
        'test "$l" -lt 16\n'
    )
    script.chmod(0o755)
    done = kbisect(
        tmp_path, "bisect", "--tree", str(repo), "--good", commits[0], "--bad", commits[-1],
        "--run", str(script),
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    data = report(tmp_path)
    assert data["status"] == "unconfirmed"
    suspects = {s["commit"] for s in data["suspects"]}  # type: ignore[attr-defined]
    # levels 14-16 could not be tested; 17 failed: the first bad commit is one of 14-17
    assert suspects == set(commits[13:17])
    assert "skipped" in str(data["message"])


def test_ends_that_do_not_reproduce_exit_4(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    commits = linear_repo(repo, 8)
    done = kbisect(
        tmp_path, "bisect", "--tree", str(repo), "--good", commits[0], "--bad", commits[-1],
        "--run", "true",
    )  # fmt: skip
    assert done.returncode == 4, done.stdout + done.stderr
    assert report(tmp_path)["status"] == "ends-not-reproduced"
    assert "the bad end" in done.stdout and "is good" in done.stdout


def test_abort_exit_status_stops_the_bisection(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    commits = linear_repo(repo, 16)
    done = kbisect(
        tmp_path, "bisect", "--tree", str(repo), "--good", commits[0], "--bad", commits[-1],
        "--run", 'l=$(cat level); [ "$l" -eq 8 ] && exit 130; test "$l" -lt 12',
    )  # fmt: skip
    assert done.returncode == 3, done.stdout + done.stderr
    assert report(tmp_path)["status"] == "aborted"
    assert "exit 130" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--good", "main", "--bad", "main~3", "--run", "true"], "not an ancestor"),
        (["--good", "main~3", "--bad", "main", "--run", "true", "--build-only"], "exactly one"),
        (["--good", "nonsense", "--bad", "main", "--run", "true"], "nonsense"),
    ],
)
def test_bad_requests_are_one_line_user_errors(
    tmp_path: Path, args: list[str], message: str
) -> None:
    repo = tmp_path / "repo"
    linear_repo(repo, 6)
    done = kbisect(tmp_path, "bisect", "--tree", str(repo), *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "results/bisect").exists(), "nothing half-written"


@pytest.mark.slow  # a whole real bisection
def test_resume_after_kill_9_redoes_no_finished_run(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    commits = linear_repo(repo, 64)
    calls = tmp_path / "calls.log"
    gate = tmp_path / "hang-once"
    gate.write_text("")
    # Every call is logged; the third call hangs until it is killed.
    script = tmp_path / "check.sh"
    script.write_text(
        "#!/bin/sh\nl=$(cat level)\n"
        f'echo "$l" >> {calls}\n'
        f'if [ "$(wc -l < {calls})" -eq 3 ] && [ -e {gate} ]; then rm -f {gate}; sleep 600; fi\n'
        'test "$l" -lt 40\n'
    )
    script.chmod(0o755)
    env = {**os.environ, "KBISECT_CACHE": str(tmp_path / "cache"),
           "KBISECT_RESULTS": str(tmp_path / "results")}  # fmt: skip
    argv = [sys.executable, "-m", "kbisect", "bisect", "--tree", str(repo),
            "--good", commits[0], "--bad", commits[-1], "--run", str(script)]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        end = time.monotonic() + 120
        while gate.exists() and time.monotonic() < end:
            time.sleep(0.1)
        assert not gate.exists(), "the hanging run was never reached"
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGKILL)  # the bisection and the hanging script with it
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    before = calls.read_text().split()
    assert len(before) == 3
    done = kbisect(tmp_path, "bisect", "--resume", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resuming bisection 1" in done.stdout
    after = calls.read_text().split()[len(before) :]
    data = report(tmp_path)
    assert data["culprit"]["commit"] == commits[39]  # type: ignore[index]
    # nothing that finished before the kill ran again: only the interrupted run is repeated
    assert after[0] == before[-1], "the resume starts with the run that was cut off"
    commands = sum(
        int(v["runs"])
        for v in [*data["ends"], *data["steps"]]  # type: ignore[misc]
    ) + sum(int(v["detail"]["runs"]) for v in data["validations"] if v["name"] == "revert")  # type: ignore[attr-defined]
    assert len(before) - 1 + len(after) == commands


@pytest.mark.slow  # a whole real bisection
def test_empty_culprit_and_merge_culprit_are_flagged(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    commits = linear_repo(repo, 4)
    # a "bad" marker that changes nothing in the tree: an empty commit
    git(repo, "commit", "-q", "--allow-empty", "-m", "mark bad")
    for i in range(3):
        (repo / "level").write_text(f"x{i}\n")
        git(repo, "commit", "-qam", f"later {i}")
    script = 'git log --format=%s | grep -q "mark bad" && exit 1; exit 0'
    done = kbisect(
        tmp_path, "bisect", "--tree", str(repo), "--good", commits[-1], "--bad", "main",
        "--run", script,
    )  # fmt: skip
    data = report(tmp_path)
    assert data["culprit"]["subject"] == "mark bad", done.stdout  # type: ignore[index]
    assert any("cannot have mattered" in f for f in data["flags"])  # type: ignore[attr-defined]

    merged = tmp_path / "merged"
    base = linear_repo(merged, 3)
    git(merged, "checkout", "-q", "-b", "side")
    (merged / "a").write_text("a\n")
    git(merged, "add", "a")
    git(merged, "commit", "-qm", "add a")
    git(merged, "checkout", "-q", "main")
    (merged / "b").write_text("b\n")
    git(merged, "add", "b")
    git(merged, "commit", "-qm", "add b")
    git(merged, "merge", "-q", "--no-ff", "-m", "merge side", "side")
    done = kbisect(
        tmp_path, "bisect", "--tree", str(merged), "--good", base[-1], "--bad", "main",
        "--run", "! { test -e a && test -e b; }",
    )  # fmt: skip
    data = report(tmp_path, 2)
    assert data["culprit"]["subject"] == "merge side", done.stdout  # type: ignore[index]
    assert any("merge of 2 parents" in f for f in data["flags"])  # type: ignore[attr-defined]


@pytest.mark.slow  # a whole real bisection
def test_replay_continues_from_a_bisect_log(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    commits = linear_repo(repo, 64)
    check = 'test "$(cat level)" -lt 50'
    first = kbisect(tmp_path, "bisect", "--tree", str(repo), "--good", commits[0],
                    "--bad", commits[-1], "--run", check)  # fmt: skip
    assert first.returncode == 0
    full = report(tmp_path)
    lines = (tmp_path / "results/bisect/1/bisect.log").read_text().splitlines()
    marks = [i for i, ln in enumerate(lines) if ln.startswith("git bisect ")]
    partial = tmp_path / "partial.log"
    partial.write_text("\n".join(lines[: marks[3] + 1]) + "\n")  # start and three marks
    again = kbisect(tmp_path, "bisect.replay", "--log-file", str(partial), "--tree", str(repo),
                    "--run", check)  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    replayed = report(tmp_path, 2)
    assert replayed["culprit"]["commit"] == commits[49]  # type: ignore[index]
    assert len(replayed["steps"]) < len(full["steps"])  # type: ignore[arg-type]


# -- the engine with seeded flaky predicates -----------------------------------------------------


class Flaky:
    """Bad from `culprit` on; a bad commit passes with probability `miss` (seeded)."""

    def __init__(self, order: dict[str, int], culprit: int, miss: float, seed: int) -> None:
        self.order, self.culprit, self.miss = order, culprit, miss
        self.rng = random.Random(seed)
        self.calls = 0

    def describe(self) -> str:
        return "flaky"

    def trial(self, commit: str, revert: Path | None = None) -> TrialResult:
        self.calls += 1
        bad = self.order[commit] >= self.culprit
        if revert is not None:
            bad = bad and revert.read_text() != str(self.culprit)
        if bad and self.rng.random() >= self.miss:
            return TrialResult(TrialOutcome.FAIL, identity=commit)
        return TrialResult(TrialOutcome.PASS, identity=commit)


@pytest.fixture(scope="module")
def repo128(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    path = tmp_path_factory.mktemp("flaky") / "repo"
    return path, linear_repo(path, 128)


@pytest.mark.slow  # three 30%-flaky bisections of 128 commits
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_flaky_predicate_is_bisected_right(
    repo128: tuple[Path, list[str]], tmp_path: Path, seed: int
) -> None:
    path, commits = repo128
    order = {c: i for i, c in enumerate(commits)}
    culprit = random.Random(seed).randrange(10, 120)
    predicate = Flaky(order, culprit, miss=0.3, seed=seed)
    reverts = tmp_path / "reverts"
    reverts.mkdir()

    def make_revert(commit: str) -> Path:
        patch = reverts / commit
        patch.write_text(str(order[commit]))
        return patch

    result = Bisector(
        history=load_history(path, [commits[0]], commits[-1]), predicate=predicate,
        policy=Policy(), journal=MemoryJournal(), make_revert=make_revert, say=lambda _: None,
    ).run()  # fmt: skip
    assert result.culprit == commits[culprit]
    assert result.status is Status.CONFIRMED
    assert any(step.runs > 1 for step in result.steps), "flaky results got repeated"
    assert {type(v.verdict) for v in [*result.ends, *result.steps]} == {Mark}
    assert [(c.name, c.expected, c.ok) for c in result.validations] == [
        ("culprit", Mark.BAD, True), ("parent", Mark.GOOD, True), ("revert", Mark.GOOD, True)
    ]  # fmt: skip
    assert result.miss_rate > 0.1, "the engine noticed that bad commits sometimes pass"


def test_build_only_finds_the_commit_that_breaks_the_build(
    tmp_path: Path, make_project: MakeProject
) -> None:
    kernel = make_buildable_repo(tmp_path / "src")
    for i in range(1, 13):
        if i == 7:
            commit_file(kernel, "core.c", "int core(void) { return 1 }\n", "core: tidy up")
        else:
            commit_file(kernel, f"Documentation/note{i}.rst", f"note {i}\n", f"docs: note {i}")
    root = make_project(
        {
            "configs/trees.yaml": f"trees:\n  - name: fake\n    url: {kernel}\n",
            "configs/builds.yaml": "profiles:\n  - {name: dom0, base: tinyconfig, "
            "fragments: [frag/dom0.config]}\n",
            "configs/frag/dom0.config": "CONFIG_XEN=y\nCONFIG_XEN_GNTDEV=m\n",
        }
    )
    env = {**os.environ, "KBISECT_ROOT": str(root), "KBISECT_RESULTS": str(tmp_path / "res")}
    done = subprocess.run(
        [sys.executable, "-m", "kbisect", "bisect", "--tree", "fake", "--good", "v2",
         "--bad", "master", "--build-only"],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads((tmp_path / "res/bisect/1/report.json").read_text())
    assert data["culprit"]["subject"] == "core: tidy up"
    assert all(step["runs"] == 1 for step in data["steps"]), "a build is decided by one run"
    assert "expected ';'" in done.stdout  # the build error is the bad step's detail


def test_the_session_costs_runs_from_the_artifact_store(
    tmp_path: Path, make_project: MakeProject
) -> None:
    """The engine is given what kbisect knows: a commit whose build is in the store costs the
    run alone, another the store's typical compile time for the profile on top."""
    from kbisect.bisect import session
    from kbisect.bisect.request import BisectRequest
    from kbisect.build.builder import store_for
    from kbisect.build.key import profile_identity
    from kbisect.config import load_project
    from kbisect.tree import repos

    root = make_project(
        {
            "configs/trees.yaml": f"trees:\n  - name: fake\n    url: {tmp_path / 'src'}\n",
            "configs/builds.yaml": "profiles:\n  - {name: dom0, base: tinyconfig}\n",
        }
    )
    project = load_project(root)
    tree = repos.open_tree(project, "fake")
    profile = project.profile("dom0")
    store = store_for(project)
    identity = profile_identity(profile, project.configs_dir)
    for key, commit, seconds in [("k1", "c1", 100.0), ("k2", "c2", 400.0), ("k3", "c3", 250.0)]:
        staging = store.staging(key)
        (staging / "bzImage").write_text("not a kernel: only its meta matters here\n")
        meta = {"tree": "fake", "commit": commit, "variant": "base", "profile": "dom0",
                "profile_identity": identity, "duration_s": seconds}  # fmt: skip
        store.publish(key, staging, meta)
    request = BisectRequest(tree="fake", good=["g"], bad="b", predicate="build", profile="dom0")
    costs = session.trial_costs(project, tree, request, None)
    assert costs("c2") == 5, "built: the run alone"
    assert costs("new") == 5 + 250, "a compile: the median of the recorded builds"
    job = BisectRequest(tree="fake", good=["g"], bad="b", predicate="job", profile="dom0")
    with_boot = session.trial_costs(project, tree, job, None)
    assert with_boot("new") == 60 + 250 + session.DEFAULT_BOOT_SECONDS
    from kbisect.lab.protocol import Deployment

    booted = Deployment("h", "k1", "6.1", "id", 0.0, boot_seconds=17.5, power_cycles=0)
    assert session.boot_seconds(booted) == 17.5, "the host's recorded boot"
